"""Rollout engine throughput and in-place weight-load time on the embedded SmolLM2-135M.

Generation: the same prompts, the same number of new tokens (ignore_eos / min_new_tokens),
T=1 sampling, bf16: `RolloutEngine.generate` (with per-token logprobs, as rollouts need)
against transformers `generate` at batch 8 and 64; ratio = vLLM / transformers.

Weight load: the full 135M state dict, in memory, swapped into the running engine by
`load_weights(via="shm")` (safetensors file in /dev/shm, only the path crosses vLLM's
RPC) against `via="rpc"` (the tensors travel inside vLLM's RPC: the baseline of the
weight-sync benchmark); vLLM's own `reload_weights` from the checkpoint folder is shown too.

    python benchmarks/bench_rollout.py [--quick]
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


def chat_prompts(tokenizer, batch: int) -> list[str]:
    msgs = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    return [tokenizer.apply_chat_template([{"role": "user", "content": m}], tokenize=False,
                                          add_generation_prompt=True) for m in msgs]


def bench_transformers(model_dir: Path, prompts: list[str], new_tokens: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
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


def main() -> None:
    args = parse_args(__doc__, extra=lambda p: p.add_argument(
        "--new-tokens", type=int, default=None, help="tokens per response (default 128, --quick 32)"))
    from safetensors.torch import load_file

    from peirce.model.embedded import prepare_embedded_model
    from peirce.rollout.engine import RolloutEngine
    from peirce.rollout.sampling import GenRequest, SamplingSpec

    from transformers import AutoTokenizer

    model_dir = prepare_embedded_model()
    batches, new_tokens, repeats = ((8, 16), 32, 2) if args.quick else ((8, 64), 128, 3)
    new_tokens = args.new_tokens or new_tokens
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # transformers first, before vLLM's processes exist, so neither run shares the CPUs with the other
    hf = {}
    for b in batches:
        hf[b] = bench_transformers(model_dir, chat_prompts(tokenizer, b), new_tokens)
        emit(BENCH, f"hf_gen_tokens_per_s_batch{b}", round(hf[b], 1), "tokens/s", new_tokens=new_tokens)
    engine = RolloutEngine(model_dir, dtype="bfloat16", max_model_len=1024, seed=0)
    emit(BENCH, "vllm_startup_s", round(engine.startup_seconds, 2), "s")
    try:
        engine.generate([GenRequest(request_id="warm", prompt="Hi", sampling=SamplingSpec(max_tokens=4))])
        for batch in batches:
            v = bench_vllm(engine, chat_prompts(tokenizer, batch), new_tokens)
            emit(BENCH, f"gen_tokens_per_s_batch{batch}", round(v, 1), "tokens/s", baseline=round(hf[batch], 1),
                 new_tokens=new_tokens, baseline_name="transformers generate", logprobs=True)

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
