"""The SFT driver: examples in, one `LearnerEngine.sft_step` per batch, a checkpoint out.

Runs the learner in-process (no Ray, no rollout engine: SFT needs neither), so `peirce sft`
is one process and the pipeline runs it as one Ray task per specialist. The run directory
has the RL layout (`peirce.trainer.run_dir.RunDir`): config.yaml, metrics.jsonl (one line
per optimizer step, `sft_loss`), checkpoints/step-N (the engine's checkpoint: an HF folder
that merge, eval and an RL run load as is) and DONE, holding the summary as JSON. A run
without DONE is redone from the start on the next call (it is minutes long, and the data
order is a pure function of the seed).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from peirce.sft.config import SFTConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTSummary:
    """What DONE holds: enough for a report without reading metrics.jsonl."""

    run_dir: str
    model_dir: str  # the final checkpoint (an HF folder)
    steps: int
    examples: int
    dropped: int
    epochs: int
    first_loss: float
    last_loss: float
    target_tokens: int
    seconds: float

    @classmethod
    def read(cls, path: Path) -> "SFTSummary":
        raw = json.loads(Path(path).read_text())
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


def plan_steps(n_examples: int, batch_size: int, epochs: int, seed: int) -> list[tuple[int, list[int]]]:
    """(epoch, example indices) per optimizer step: each epoch a seeded permutation cut into
    `batch_size` chunks (the last one may be smaller). Every index once per epoch."""
    if n_examples < 1 or batch_size < 1 or epochs < 1:
        raise ValueError(f"plan_steps: n_examples={n_examples}, batch_size={batch_size} and epochs={epochs} "
                         "must all be >= 1")
    plan = []
    for epoch in range(epochs):
        order = list(range(n_examples))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        plan += [(epoch + 1, order[i:i + batch_size]) for i in range(0, n_examples, batch_size)]
    return plan


def _learner_config(cfg: SFTConfig):
    from peirce.learner.engine import LearnerConfig
    from peirce.model.precision import use_bf16

    return LearnerConfig(zero_stage=0, bf16=use_bf16(cfg.precision), lr=cfg.lr, sft_lr=cfg.lr,
                         weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, micro_batch_size=cfg.micro_batch_size,
                         gradient_checkpointing=cfg.gradient_checkpointing, seed=cfg.seed)


def run_sft(cfg: SFTConfig, *, progress: bool = True) -> SFTSummary:
    """Train `cfg` to completion (or return the summary of a run that already completed)."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from peirce.config import dump_config
    from peirce.learner.batch import collate_sft
    from peirce.learner.dist_env import claim_single_rank_env
    from peirce.learner.engine import LearnerEngine
    from peirce.sft.examples import build_sft_examples, train_tasks
    from peirce.trainer.orchestrator import resolve_model
    from peirce.trainer.run_dir import RunDir

    run = RunDir.create(cfg.run_dir)
    if run.done_path.exists():
        log.info("sft %s already complete; skipping", cfg.name)
        return SFTSummary.read(run.done_path)
    start = time.perf_counter()
    dump_config(cfg, run.config_path)
    run.metrics_path.unlink(missing_ok=True)  # an interrupted attempt is redone from the start
    model_dir = resolve_model(cfg.model)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    data = build_sft_examples(train_tasks(cfg.families, cfg.levels, cfg.examples, cfg.seed), tokenizer,
                              cfg.prompt_style, max_seq_len=cfg.max_seq_len)
    if data.dropped:
        log.warning("sft %s: %d examples longer than max_seq_len=%d dropped (longest %d tokens)", cfg.name,
                    len(data.dropped), cfg.max_seq_len, max(n for _, n in data.dropped))
    plan = plan_steps(len(data.examples), cfg.batch_size, cfg.epochs, cfg.seed)
    claim_single_rank_env()
    engine = LearnerEngine(model_dir, _learner_config(cfg))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    vocab = int(engine.hf_model.config.vocab_size)
    losses: list[float] = []
    bar = tqdm(total=len(plan), desc=f"sft/{cfg.name}", disable=not progress, dynamic_ncols=True)
    try:
        for step, (epoch, rows) in enumerate(plan, 1):
            batch = collate_sft([data.examples[i] for i in rows], pad_token_id=pad, vocab_size=vocab)
            out = engine.sft_step(batch, lr=cfg.lr)
            losses.append(float(out["sft_loss"]))
            run.append_metrics({"step": step, "epoch": epoch, "time": time.time(), "sft_loss": out["sft_loss"],
                                "lr": out["lr"], "grad_norm": out.get("grad_norm", math.nan),
                                "examples": len(rows), "tokens": out["tokens"], "seconds": out["seconds"],
                                "tokens_per_s": out["tokens_per_s"]})
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", epoch=epoch)
        final = engine.save_checkpoint(run.checkpoint_path(len(plan)), {"sft": cfg.model_dump(mode="json"),
                                                                         "step": len(plan)})
        run.mark_latest(len(plan))
    finally:
        bar.close()
    summary = SFTSummary(run_dir=str(run.root), model_dir=str(final), steps=len(plan), examples=len(data.examples),
                         dropped=len(data.dropped), epochs=cfg.epochs, first_loss=losses[0], last_loss=losses[-1],
                         target_tokens=data.target_tokens, seconds=time.perf_counter() - start)
    run.done_path.write_text(json.dumps(asdict(summary), indent=2))
    return summary
