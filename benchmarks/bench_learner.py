"""Learner training throughput (DeepSpeed engine) against a plain torch AdamW loop.

Both sides run the same model (SmolLM2-135M by default), the same padded batch and the
same REINFORCE loss on response tokens, one optimizer update per step:
- learner: `LearnerEngine` (bf16 weights, fp32 master weights in DeepSpeed's optimizer
  wrapper, response-position gather before the LM head, fp32 log-softmax);
- baseline: HF model in fp32 under `torch.autocast(bfloat16)`, full-sequence logits,
  `torch.optim.AdamW`, grad-norm clip: the loop of shared/notes/stack.md.
Tokens/s counts every real (prompt + response) token in the batch.

    python benchmarks/bench_learner.py --quick     # 8 x 128 tokens, 2 timed steps
    python benchmarks/bench_learner.py             # 16 x 256 tokens, 3 timed steps
    python benchmarks/bench_learner.py --quick --tiny --dtype fp32   # CPUs without bf16 units
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, parse_args  # noqa: E402

BENCH = "learner"


def _args():
    def extra(p):
        p.add_argument("--model", default=None, help="HF folder (default: the embedded SmolLM2-135M)")
        p.add_argument("--tiny", action="store_true",
                       help="a random 4-layer, 256-wide Llama (SmolLM2 vocab) instead: for slow CPUs")
        p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16",
                       help="bf16: learner bf16 + fp32 master, baseline autocast; fp32: both fp32")
        p.add_argument("--batch", type=int, default=None)
        p.add_argument("--seq-len", type=int, default=None)
        p.add_argument("--steps", type=int, default=None, help="timed steps (after one warm-up step)")
        p.add_argument("--zero-stage", type=int, default=0)
        p.add_argument("--micro-batch", type=int, default=None, help="rows per micro-batch (default: whole batch)")

    return parse_args(__doc__, extra=extra)


def _batch(batch: int, seq_len: int, vocab: int):
    import torch

    from peirce.learner.batch import Sample, collate

    g = torch.Generator().manual_seed(0)
    prompt_len = seq_len // 4
    samples = [
        Sample(
            torch.randint(0, vocab, (prompt_len,), generator=g).tolist(),
            torch.randint(0, vocab, (seq_len - prompt_len,), generator=g).tolist(),
            1.0 if i % 2 == 0 else -1.0,
        )
        for i in range(batch)
    ]
    return collate(samples)


def pg_loss(inp):
    m = inp.mask
    return -(inp.advantages * inp.logprobs * m).sum() / m.sum(), {}


def _timed(fn):
    """(wall seconds, CPU seconds of this process) for one call: CPU time is robust to other
    processes competing for the cores, wall time is what a run would see."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _learner_step(model_dir, batch, zero_stage, micro_batch, bf16):
    from peirce.learner.engine import LearnerConfig, LearnerEngine

    cfg = LearnerConfig(zero_stage=zero_stage, bf16=bf16, lr=1e-6, micro_batch_size=micro_batch)
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed prints build notes on stdout
        engine = LearnerEngine(model_dir, cfg)
    return engine, lambda: engine.train_step(batch, pg_loss)


def _plain_step(model_dir, batch, bf16):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    mask = batch.response_mask
    targets = batch.input_ids[:, 1:]  # logits at position t predict token t + 1

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, targets[..., None]).squeeze(-1)
        lp = torch.gather(logp, 1, batch.response_index)
        loss = -(batch.advantages * lp * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    args = _args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    import torch

    from peirce.model.embedded import prepare_embedded_model

    if args.tiny:
        from peirce.model.tiny import build_tiny_llama
        from peirce.paths import peirce_home

        model_dir = build_tiny_llama(
            peirce_home() / "models" / "bench-llama-h256-l4", hidden_size=256, num_layers=4,
            num_heads=4, num_kv_heads=2, intermediate_size=768,
        )
    else:
        model_dir = Path(args.model) if args.model else prepare_embedded_model()
    b = args.batch or (8 if args.quick else 16)
    seq = args.seq_len or (128 if args.quick else 256)
    steps = args.steps or (2 if args.quick else 3)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    batch = _batch(b, seq, vocab)
    tokens = float(batch.seq_lengths.sum())
    threads = torch.get_num_threads()

    bf16 = args.dtype == "bf16"
    plain = _plain_step(model_dir, batch, bf16)
    engine, learner = _learner_step(model_dir, batch, args.zero_stage, args.micro_batch or b, bf16)
    plain(), learner()  # warm-up
    # Interleaved, so both sides see the same load from whatever else runs on the machine.
    runs = [(_timed(plain), _timed(learner)) for _ in range(steps)]
    plain_wall = statistics.median(p[0] for p, _ in runs)
    plain_cpu = statistics.median(p[1] for p, _ in runs)
    learner_wall = statistics.median(q[0] for _, q in runs)
    learner_cpu = statistics.median(q[1] for _, q in runs)
    lp_wall, _ = _timed(lambda: engine.logprobs(batch))
    shape = {"batch": b, "seq_len": seq, "steps": steps, "zero_stage": args.zero_stage, "dtype": args.dtype,
             "threads": threads, "model": model_dir.name}
    emit(BENCH, "train_tokens_per_s", round(tokens / learner_wall, 2), "tokens/s",
         baseline=round(tokens / plain_wall, 2), **shape)
    emit(BENCH, "train_tokens_per_cpu_s", round(tokens / learner_cpu, 2), "tokens/cpu-s",
         baseline=round(tokens / plain_cpu, 2), **shape)
    emit(BENCH, "train_step_seconds", round(learner_wall, 3), "s", baseline=round(plain_wall, 3), **shape)
    emit(BENCH, "logprobs_tokens_per_s", round(tokens / lp_wall, 2), "tokens/s", **shape)


if __name__ == "__main__":
    main()
