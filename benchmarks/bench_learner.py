"""Learner memory and throughput (DeepSpeed engine) against a plain torch AdamW loop.

Each side runs alone in its own child process (so its peak RSS, /proc VmHWM, is its own)
on the same model (SmolLM2-135M by default), the same batch and the same REINFORCE loss
on response tokens, one optimizer update per step:
- learner: `LearnerEngine` with its defaults (bf16 weights, fp32 master weights in
  DeepSpeed's optimizer, token-budget packed micro-batches, chunked LM head);
- baseline: HF model in fp32 under `torch.autocast(bfloat16)`, full-sequence logits,
  `torch.optim.AdamW`, grad-norm clip, gradient accumulation over `--plain-rows` padded
  rows per forward (the whole batch at once needs ~12 GB at 8 x 1024 tokens).
Both sides do the same work: activation checkpointing on both or neither
(`--grad-checkpointing`, default on: without it the learner needs ~0.7 GiB per 1024
tokens), and no entropy (the loss does not use it, and the baseline computes none).
A learner with checkpointing against a baseline without it reads as 0.78x while the
learner is faster at equal work. Throughput counts real (prompt + response) tokens
only: padding is excluded.
`--ragged` draws lengths between seq_len/4 and seq_len (padding then costs the baseline).

    python benchmarks/bench_learner.py --quick     # 8 x 256 tokens, 1 timed step
    python benchmarks/bench_learner.py             # 8 x 1024 tokens, 2 timed steps
    python benchmarks/bench_learner.py --dtype fp32 --steps 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, parse_args  # noqa: E402

BENCH = "learner"


def _args(argv=None):
    def extra(p):
        p.add_argument("--model", default=None, help="HF folder (default: the embedded SmolLM2-135M)")
        p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16",
                       help="bf16: learner bf16 + fp32 master, baseline autocast; fp32: both fp32")
        p.add_argument("--batch", type=int, default=8)
        p.add_argument("--seq-len", type=int, default=None)
        p.add_argument("--ragged", action="store_true", help="lengths uniform in [seq_len/4, seq_len]")
        p.add_argument("--steps", type=int, default=None, help="timed steps (after one warm-up step)")
        p.add_argument("--zero-stage", type=int, default=0)
        p.add_argument("--learner", default="{}", help="JSON overrides of LearnerConfig fields")
        p.add_argument("--plain-rows", type=int, default=2, help="baseline rows per forward (grad accumulation)")
        p.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                       help="activation checkpointing on both sides (the learner's unless --learner sets it)")
        p.add_argument("--child", choices=["learner", "plain"], default=None,
                       help="internal: run one side in this process and print its JSON")

    return parse_args(__doc__, argv=argv, extra=extra)


def _samples(batch: int, seq_len: int, vocab: int, ragged: bool):
    import torch

    from peirce.learner.batch import Sample

    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(batch):
        n = int(torch.randint(seq_len // 4, seq_len + 1, (1,), generator=g)) if ragged else seq_len
        p = max(1, n // 4)
        out.append(Sample(torch.randint(0, vocab, (p,), generator=g).tolist(),
                          torch.randint(0, vocab, (n - p,), generator=g).tolist(), 1.0 if i % 2 == 0 else -1.0))
    return out


def pg_loss(inp):
    m = inp.mask
    return -(inp.advantages * inp.logprobs * m).sum() / m.sum(), {}


def _learner_step(model_dir, batch, args):
    from peirce.learner.engine import LearnerConfig, LearnerEngine

    cfg = LearnerConfig(**{"zero_stage": args.zero_stage, "bf16": args.dtype == "bf16", "lr": 1e-6,
                           "micro_batch_size": batch.size, "gradient_checkpointing": args.grad_checkpointing,
                           **json.loads(args.learner)})
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed prints build notes on stdout
        engine = LearnerEngine(model_dir, cfg)
    return lambda: engine.train_step(batch, pg_loss, with_entropy=False)


def _plain_step(model_dir, batch, args):
    import torch
    from transformers import AutoModelForCausalLM

    bf16 = args.dtype == "bf16"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if args.grad_checkpointing:  # as the learner does it
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    total = batch.response_mask.sum()
    parts = [batch.select(list(range(i, min(batch.size, i + args.plain_rows))))
             for i in range(0, batch.size, args.plain_rows)]

    def step():
        for mb in parts:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask).logits
            logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, mb.input_ids[:, 1:, None]).squeeze(-1)
            lp = torch.gather(logp, 1, mb.response_index)
            (-(mb.advantages * lp * mb.response_mask).sum() / total).backward()
            del logits, logp, lp
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _child(args) -> None:
    """One side, alone in this process: warm-up, timed steps, peak RSS; one JSON line out."""
    import torch
    from transformers import AutoConfig

    from peirce.learner.batch import collate
    from peirce.learner.memory import peak_rss_bytes, rss_bytes

    model_dir = Path(args.model)
    vocab = AutoConfig.from_pretrained(model_dir).vocab_size
    batch = collate(_samples(args.batch, args.seq_len, vocab, args.ragged))
    step = (_learner_step if args.child == "learner" else _plain_step)(model_dir, batch, args)
    step()  # warm-up
    walls, cpus, rss_after = [], [], []
    for _ in range(args.steps):
        w0, c0 = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        rss_after.append(rss_bytes())
    print(json.dumps({"tokens": int(batch.seq_lengths.sum()), "walls": walls, "cpus": cpus, "rss_after": rss_after,
                      "peak_rss": peak_rss_bytes(), "threads": torch.get_num_threads()}), flush=True)


def _run_child(side: str, model_dir: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--model", str(model_dir), "--dtype", args.dtype,
           "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--steps", str(args.steps),
           "--zero-stage", str(args.zero_stage), "--learner", args.learner, "--plain-rows", str(args.plain_rows),
           "--grad-checkpointing" if args.grad_checkpointing else "--no-grad-checkpointing"]
    cmd += ["--ragged"] if args.ragged else []
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = _args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    args.seq_len = args.seq_len or (256 if args.quick else 1024)
    args.steps = args.steps or (1 if args.quick else 2)
    if args.child:
        _child(args)
        return
    from peirce.model.embedded import prepare_embedded_model

    model_dir = Path(args.model) if args.model else prepare_embedded_model()
    plain = _run_child("plain", model_dir, args)
    learner = _run_child("learner", model_dir, args)
    shape = {"batch": args.batch, "seq_len": args.seq_len, "ragged": args.ragged, "steps": args.steps,
             "zero_stage": args.zero_stage, "dtype": args.dtype, "threads": learner["threads"],
             "model": model_dir.name, "learner_overrides": json.loads(args.learner), "plain_rows": args.plain_rows,
             "grad_checkpointing": args.grad_checkpointing}
    tokens = learner["tokens"]
    gib = 2**30
    emit(BENCH, "peak_rss_gib", round(learner["peak_rss"] / gib, 3), "GiB", baseline=round(plain["peak_rss"] / gib, 3),
         **shape)
    emit(BENCH, "rss_after_steps_gib", [round(r / gib, 3) for r in learner["rss_after"]], "GiB", **shape)
    emit(BENCH, "train_tokens_per_s", round(tokens / min(learner["walls"]), 2), "tokens/s",
         baseline=round(tokens / min(plain["walls"]), 2), **shape)
    emit(BENCH, "train_tokens_per_cpu_s", round(tokens / min(learner["cpus"]), 2), "tokens/cpu-s",
         baseline=round(tokens / min(plain["cpus"]), 2), **shape)


if __name__ == "__main__":
    main()
