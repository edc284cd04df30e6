"""Run health for the driver: the two guards, their console lines, gauges and run summary.

Glue only: the decisions are the pure state machines in signal_guard.py (no learning
signal) and sync_guard.py (weight sync). This is the one place that turns their
verdicts into what a user sees: a WARNING line on the console (once per episode, or
once per N steps), fields in metrics.jsonl, Prometheus gauges, and
`<run>/run_summary.json`, rewritten every step so a report (or a person) can tell at
a glance whether the run learned anything and how it ended.
"""

from __future__ import annotations

import logging
import math
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

    def write_summary(self, status: str, error: str | None = None) -> None:
        """status: running | done | stopped (on request) | failed (error says why, a guard's stop included)."""
        self.run_dir.write_summary({"run": self.name, "step": self.step, "status": status, "error": error,
                                    **self.signal.summary(), **self.sync.summary()})

    def state_dict(self) -> dict[str, Any]:
        return {"signal": self.signal.state_dict()}

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        self.signal.load_state_dict(state.get("signal", {}))
        self.step = step
