"""Run health for the driver: the two guards, their console lines, gauges and run summary.

Glue only: the decisions are the pure state machines in signal_guard.py (no learning
signal) and sync_guard.py (weight sync). This is the one place that turns their
verdicts into what a user sees: a WARNING line on the console (once per episode, or
once per N steps), fields in metrics.jsonl, Prometheus gauges, and
`<run>/run_summary.json`, rewritten every step so a report (or a person) can tell at
a glance whether the run learned anything and how it ended.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterable
from typing import Any, Sequence

from peirce.config import TrainConfig
from peirce.metrics import MetricsExporter
from peirce.trainer.run_dir import RunDir
from peirce.trainer.signal_guard import Scored, SignalGuard, signal_scope
from peirce.trainer.sync_guard import SyncGuard, WeightSyncError

log = logging.getLogger(__name__)


class RunHealth:
    def __init__(self, cfg: TrainConfig, run_dir: RunDir, metrics: MetricsExporter) -> None:
        tc = cfg.trainer
        self.name, self.run_dir, self.metrics = cfg.name, run_dir, metrics
        self.signal = SignalGuard(tc.no_signal_steps, signal_scope(cfg.algorithm.advantage), cfg.rollout.temperature)
        self.sync = SyncGuard(tc.logprob_gap_warn, tc.logprob_gap_stop)
        self.stop: str | None = None  # set when the run must stop (weight sync broken)
        self.step = 0

    def on_step(self, step: int, learner_out: dict[str, Any], batch: Sequence[Sequence[Scored]]) -> dict[str, Any]:
        """Read one finished step; returns the fields to add to its metrics record."""
        self.step = step
        sig = self.signal.observe(step, batch)
        sync = self.sync.observe(step, learner_out)
        for message in (sig.warning, sync.warning):
            if message:
                log.warning(message)
        if sig.recovered:
            log.info(sig.recovered)
        self.metrics.set("peirce_trainer_no_signal_streak_steps", sig.streak)
        self.metrics.inc("peirce_trainer_no_signal_steps_total", 0.0 if sig.has_signal else 1.0)
        if sync.gap is not None and math.isfinite(sync.gap):
            self.metrics.set("peirce_learner_logprob_gap_nats", sync.gap)
        if sync.stop:
            self.stop = sync.stop
            log.error(sync.stop)
        self.write_summary("running")
        return {**sig.record(), **sync.record()}

    def raise_stop(self, checkpoint: str | None) -> None:
        """End the run the guard asked to stop (the driver saved `checkpoint` first)."""
        saved = f" Checkpoint saved at {checkpoint}." if checkpoint else ""
        raise WeightSyncError(f"{self.stop}{saved}")

    def write_summary(self, status: str, error: str | None = None, ended_early: str | None = None) -> None:
        """status: running | done | stopped (on request) | failed (error says why, a guard's stop included).
        ended_early: why a finished run trained fewer steps than asked (see `tasks_exhausted`)."""
        self.run_dir.write_summary({"run": self.name, "step": self.step, "status": status, "error": error,
                                    "ended_early": ended_early, **self.signal.summary(), **self.sync.summary()})

    def state_dict(self) -> dict[str, Any]:
        return {"signal": self.signal.state_dict()}

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        self.signal.load_state_dict(state.get("signal", {}))
        self.step = step


def untrained_counts(drop_kinds: Iterable[str]) -> dict[str, int]:
    """drops.jsonl kinds -> how many groups left untrained for each."""
    return dict(sorted(collections.Counter(drop_kinds).items()))


def tasks_exhausted(name: str, step: int, max_steps: int, untrained: dict[str, int]) -> str:
    """The line a run that ran out of tasks before `max_steps` ends with. Why: a run whose every
    group was filtered (e.g. DAPO's filters on a model that never stops) otherwise ends as
    'done' at step 0 and looks like a success."""
    dropped = ", ".join(f"{n} {kind}" for kind, n in untrained.items()) or "none"
    cause = ""
    if untrained.get("filtered"):
        cause = (" Filtered groups had no reward variance (dynamic sampling) or every sample hit max_tokens "
                 "(overlong filtering): raise rollout.max_tokens, add tasks, or turn those filters off.")
    trained = "nothing was trained" if step == 0 else f"{step} of {max_steps} steps trained"
    return (f"{name}: the task source ran out before trainer.max_steps={max_steps}: {trained}; groups left "
            f"untrained: {dropped} (see drops.jsonl).{cause}")
