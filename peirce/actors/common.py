"""What every peirce actor does on start: quiet, offline, loopback, own metrics port."""

from __future__ import annotations

import logging
import os

from peirce.actors.runtime import ACTOR_ENV
from peirce.metrics import MetricsExporter

# What an actor's process falls back to when its runtime_env did not set it (a `ray job
# submit` cluster, a test's own ray.init): the runtime's ACTOR_ENV, plus DeepSpeed on CPU.
ENV_DEFAULTS = {**ACTOR_ENV, "DS_ACCELERATOR": "cpu"}


def apply_env_defaults() -> None:
    """Offline, quiet, loopback: ENV_DEFAULTS for every variable not already set."""
    for k, v in ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)


def actor_setup(run: str, worker: str, metrics_host: str = "127.0.0.1") -> MetricsExporter:
    apply_env_defaults()
    logging.basicConfig(level=os.environ.get("PEIRCE_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s {run}/{worker} %(levelname)s %(name)s: %(message)s")
    metrics = MetricsExporter(run=run, worker=worker)
    metrics.serve(host=metrics_host, port=0)
    return metrics


class LoopThread:
    """Runs a worker loop on a thread and keeps its exception, so a health check
    (`alive()`) reports *why* a worker stopped instead of just that it did."""

    def __init__(self, target, name: str) -> None:
        import threading

        self.error: BaseException | None = None
        self._target = target
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as exc:  # noqa: BLE001 - reported through alive()
            logging.getLogger(__name__).exception("worker loop crashed")
            self.error = exc

    def alive(self) -> bool:
        if self.error is not None:
            raise RuntimeError(f"worker loop crashed: {type(self.error).__name__}: {self.error}") from self.error
        return self.thread.is_alive()

    def join(self, timeout_s: float) -> None:
        self.thread.join(timeout_s)
