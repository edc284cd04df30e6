"""Experiment-tracking backends for the per-step metrics record (`trainer.loggers`).

Every backend gets the same record the driver writes to metrics.jsonl, once per
learner step, through one small protocol. `jsonl` is metrics.jsonl itself (resume,
`peirce run`'s progress and the report read it, so it is always on); `tensorboard`
writes event files under `<run>/tensorboard` with tensorboardX (87 kB, no TensorFlow
and no tensorboard server needed to write); `wandb` runs Weights & Biases in offline
mode only, under `<run>/wandb`: nothing is ever sent (`wandb sync` is the user's call).
Backends import their library when opened, so an unused one costs nothing.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from peirce.trainer.run_dir import RunDir

# backend -> (module it needs, how to install it)
REQUIRES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboardX", "pip install tensorboardX  (or: pip install 'peirce[tracking]')"),
    "wandb": ("wandb", "pip install wandb  (or: pip install 'peirce[tracking]')"),
}
NOT_SCALARS = ("step", "time")  # the x axis and the wall time, not series


class Logger(Protocol):
    def log(self, step: int, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def missing_backends(names: list[str]) -> list[str]:
    """One message per backend in `names` whose library is not installed (no import done)."""
    return [f"{name!r} needs the {module} package, which is not installed: {hint}"
            for name in names if name in REQUIRES
            for module, hint in [REQUIRES[name]] if importlib.util.find_spec(module) is None]


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's finite numbers (bools as 0/1): what a time-series backend can plot."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in NOT_SCALARS or not isinstance(value, numbers.Real):
            continue
        value = float(value)
        if math.isfinite(value):
            out[key] = value
    return out


class JsonlLogger:
    """metrics.jsonl: one JSON object per step (NaN/inf written as null)."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        self.run_dir.append_metrics(dict(record))

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Scalars into `<run>/tensorboard/events.out.tfevents.*`, one event per step written and
    flushed synchronously (tensorboardX's SummaryWriter queues events on a thread and its
    flush() does not drain that queue), so a live `tensorboard --logdir` sees every step.
    On resume, a START session log at `purge_step` hides the crashed run's redone steps."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.proto.summary_pb2 import Summary

        self._event, self._summary = Event, Summary
        log_dir.mkdir(parents=True, exist_ok=True)
        # The file name holds only the second and host: a pid and a counter keep two
        # writers of one second (a quick resume) from truncating each other's file.
        suffix = f".{os.getpid()}.{len(list(log_dir.glob('events.out.tfevents.*')))}"
        self.writer = EventsWriter(str(log_dir / "events"), filename_suffix=suffix)
        if purge_step is not None:
            self.writer.write_event(Event(step=purge_step, wall_time=time.time(),
                                          session_log=SessionLog(status=SessionLog.START)))
            self.writer.flush()

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        wall = record.get("time")
        values = [self._summary.Value(tag=k, simple_value=v) for k, v in scalars(record).items()]
        self.writer.write_event(self._event(step=step, wall_time=float(wall) if isinstance(wall, (int, float))
                                            else time.time(), summary=self._summary(value=values)))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """Weights & Biases, offline only: WANDB_MODE=offline is forced before wandb is imported,
    so no code path can reach the network; runs land in `<run>/wandb/offline-run-*`."""

    def __init__(self, wandb_dir: Path, name: str, config: Mapping[str, Any]) -> None:
        os.environ["WANDB_MODE"] = "offline"
        os.environ["WANDB_ERROR_REPORTING"] = "false"  # no crash reports either
        os.environ.setdefault("WANDB_SILENT", "true")
        wandb_dir.mkdir(parents=True, exist_ok=True)
        import wandb

        settings = wandb.Settings(mode="offline", console="off", silent=True, disable_git=True, save_code=False,
                                  x_disable_stats=True, x_disable_machine_info=True)
        self.run = wandb.init(project="peirce", name=name, dir=str(wandb_dir), config=dict(config),
                              mode="offline", settings=settings)

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        self.run.log(scalars(record), step=step)

    def close(self) -> None:
        import wandb

        self.run.finish()
        wandb.teardown()  # finish() may return before wandb-core has written the run file; this waits


def open_loggers(names: list[str], run_dir: RunDir, *, name: str, config: Mapping[str, Any],
                 first_step: int = 1) -> list[Logger]:
    """One logger per configured backend; `first_step` is the next step to be logged
    (after a resume, events of later steps left by the crashed run are purged)."""
    if problems := missing_backends(names):
        raise ImportError("trainer.loggers: " + "; ".join(problems))
    factories: dict[str, Callable[[], Logger]] = {
        "jsonl": lambda: JsonlLogger(run_dir),
        "tensorboard": lambda: TensorBoardLogger(run_dir.root / "tensorboard",
                                                 purge_step=first_step if first_step > 1 else None),
        "wandb": lambda: WandbLogger(run_dir.root / "wandb", name, config),
    }
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"trainer.loggers: unknown backend(s) {unknown}; choose from {sorted(factories)}")
    return [factories[n]() for n in names]


def log_all(loggers: list[Logger], step: int, record: Mapping[str, Any]) -> None:
    for logger in loggers:
        logger.log(step, record)


def close_all(loggers: list[Logger]) -> None:
    for logger in loggers:
        logger.close()
