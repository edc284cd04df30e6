"""Run a stage's jobs in the cluster, at most N at once, one progress bar per running job.

A job is a Ray future plus the handle to kill when it ends (an actor, or None for a task)
and the run directory whose metrics.jsonl the bar follows. A job that raises stops the
stage with a StageError naming it; whatever else is running is killed on the way out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from peirce.trainer.run_dir import RunDir


class StageError(RuntimeError):
    pass


@dataclass(frozen=True)
class Job:
    name: str
    run_dir: Path
    total: int  # steps, for the bar
    start: Callable[[], tuple[Any, Any]]  # -> (ObjectRef, handle to ray.kill or None)
    postfix: Callable[[dict[str, Any]], dict[str, Any]]  # last metrics row -> bar postfix


def _refresh(bar: tqdm, job: Job) -> None:
    rows = RunDir(job.run_dir).read_metrics()
    if rows:
        bar.n = rows[-1]["step"]
        bar.set_postfix(job.postfix(rows[-1]))
        bar.refresh()


def run_jobs(jobs: Sequence[Job], stage: str, max_concurrent: int | None = None, poll_s: float = 2.0) -> None:
    """Start jobs in order, keeping at most `max_concurrent` (None: all) running, until all end."""
    queue = list(jobs)
    running: dict[str, tuple[Job, Any, Any, tqdm]] = {}
    try:
        while queue or running:
            while queue and (max_concurrent is None or len(running) < max_concurrent):
                job = queue.pop(0)
                ref, handle = job.start()
                bar = tqdm(total=job.total, desc=f"{stage}/{job.name}", dynamic_ncols=True)
                running[job.name] = (job, ref, handle, bar)
            done, _ = ray.wait([r for _, r, _, _ in running.values()], num_returns=1, timeout=poll_s)
            for job, _, _, bar in running.values():
                _refresh(bar, job)
            for ref in done:
                name = next(n for n, (_, r, _, _) in running.items() if r == ref)
                job, _, handle, bar = running.pop(name)
                bar.close()
                try:
                    ray.get(ref)
                except Exception as exc:
                    raise StageError(f"{stage}: run {name!r} failed: {exc}") from exc
                finally:
                    if handle is not None:
                        ray.kill(handle)
    finally:
        for _, _, handle, bar in running.values():
            bar.close()
            if handle is not None:
                ray.kill(handle)
