"""Stage A's warm-up: each specialist's supervised run on worked solutions, as a Ray task.

Each warm-up is `peirce.sft.loop.run_sft` in a task of its own (`max_calls=1`: the worker
process exits afterwards, so its learner's memory is gone before RL starts). Its run
directory is `<specialist run_dir>/warmup`; DONE there is the stage's marker, so a
re-run skips a finished warm-up and redoes an interrupted one. Torch threads are set to
the machine's cores divided by the warm-ups running at once, since Ray's default
(OMP_NUM_THREADS = the task's num_cpus) would leave cores idle on a small CPU box.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ray

from peirce.pipeline.jobs import Job, run_jobs
from peirce.sft.config import SFTConfig
from peirce.sft.loop import SFTSummary
from peirce.trainer.run_dir import RunDir

log = logging.getLogger(__name__)


def _warmup_task(cfg_dict: dict[str, Any], threads: int) -> dict[str, Any]:
    from dataclasses import asdict

    import torch

    from peirce.actors.common import apply_env_defaults
    from peirce.sft.loop import run_sft

    apply_env_defaults()
    torch.set_num_threads(max(1, threads))
    logging.basicConfig(level=logging.INFO)
    return asdict(run_sft(SFTConfig.model_validate(cfg_dict), progress=False))


def warmup_steps(cfg: SFTConfig) -> int:
    """Optimizer steps the bar expects (exact unless a level's train split is short)."""
    per_epoch = -(-cfg.examples * len(cfg.families) // cfg.batch_size)
    return per_epoch * cfg.epochs


def run_warmups(warmups: dict[str, SFTConfig], *, resources: dict[str, tuple[float, float]],
                max_concurrent: int | None = None) -> dict[str, Path]:
    """Train every warm-up not yet DONE; specialist name -> its checkpoint (an HF folder).

    `resources`: specialist name -> (num_cpus, num_gpus) of its learner, which the warm-up
    task asks for (so on a GPU cluster the warm-up trains on a GPU, as its RL learner will)."""
    from peirce.actors.runtime import actor_log_options

    todo = {n: c for n, c in warmups.items() if not RunDir(Path(c.run_dir)).done_path.exists()}
    for name in warmups.keys() - todo.keys():
        log.info("stage_a/%s warm-up already complete; skipping", name)
    at_once = min(len(todo), max_concurrent or len(todo)) or 1
    threads = max(1, (os.cpu_count() or 1) // at_once)

    def job(name: str, cfg: SFTConfig) -> Job:
        def start():
            cpus, gpus = resources.get(name, (1.0, 0.0))
            task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1)(_warmup_task)
            opts = actor_log_options(cfg.run_dir, "sft")
            return task.options(**opts).remote(cfg.model_dump(mode="json"), threads), None

        return Job(name=f"{name}-warmup", run_dir=Path(cfg.run_dir), total=warmup_steps(cfg), start=start,
                   postfix=lambda row: {"loss": f"{row['sft_loss']:.3f}"})

    run_jobs([job(n, c) for n, c in todo.items()], "stage_a", max_concurrent)
    return {name: Path(SFTSummary.read(RunDir(Path(c.run_dir)).done_path).model_dir) for name, c in warmups.items()}
