"""Metrics sources for the deploy tests (plain module: conftest names collide across dirs).

A *metrics source* is a function `(targets_dir) -> MetricsSource` that starts something
announcing exporters into `targets_dir` (file_sd, like every peirce actor) and returns
how to stop it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from peirce.monitoring.promtest import PrometheusServer

REPO = Path(__file__).resolve().parents[2]


@dataclass
class MetricsSource:
    """A running producer of peirce metrics for one or more runs."""

    runs: tuple[str, ...]
    stop: Callable[[], None]
    # Dashboard panel titles whose queries may legitimately be empty for this source
    # (e.g. a clean run never rejects a frame, so that counter is never created).
    may_be_empty: frozenset[str] = field(default_factory=frozenset)
    # Prometheus range window for rate(): long enough to hold >= 2 scrapes of this source.
    rate_window: str = "15s"
    # True when every CATALOGUE metric is emitted for every run (the synthetic source).
    whole_catalogue: bool = False
    # Seconds until every announced exporter must be scraped (vLLM start-up is slow).
    startup_timeout: float = 60.0


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, **(env or {})}, start_new_session=True)


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    return pids


def _stopper(proc: subprocess.Popen) -> Callable[[], None]:
    """SIGTERM the source, then SIGKILL whatever it left in its session (Ray, vLLM workers)."""
    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        deadline = time.monotonic() + 20
        while _session_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in _session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return stop


def synthetic_source(targets_dir: Path) -> MetricsSource:
    """Two runs x two workers emitting every CATALOGUE metric (a separate process)."""
    runs = ("deduction", "induction")
    proc = _spawn([sys.executable, "-m", "peirce.monitoring.promtest", "synthetic",
                   "--targets-dir", str(targets_dir), "--runs", *runs, "--interval", "0.25"],
                  targets_dir.parent / "synthetic.log")
    deadline = time.monotonic() + 60
    while len(list(targets_dir.glob("*.json"))) < 2 * len(runs):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stopper(proc)()
            log = (targets_dir.parent / "synthetic.log").read_text(errors="replace")
            raise RuntimeError(f"synthetic metrics source did not announce its exporters:\n{log}")
        time.sleep(0.1)
    return MetricsSource(runs=runs, stop=_stopper(proc), whole_catalogue=True)


def _positive_series(targets_dir: Path) -> set[str]:
    """Names of series with a value > 0 on any exporter announced in targets_dir (scraped directly)."""
    names: set[str] = set()
    for path in targets_dir.glob("*.json"):
        try:
            address = json.loads(path.read_text())[0]["targets"][0]
            text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
        except (OSError, ValueError, KeyError, IndexError):
            continue
        for line in text.splitlines():
            name, _, value = line.partition("{")
            if name.startswith("peirce_") and float(value.rsplit(" ", 1)[-1]) > 0:
                names.add(name)
    return names


MASA_PANELS = ("Meta reward", "Calibration error", "Meta token share", "Gating", "Solution tokens saved / s")


def smoke_train_source(targets_dir: Path) -> MetricsSource:
    """A real `peirce train` smoke run (tiny Llama, toy task; ~2 min) exporting into targets_dir."""
    from peirce.config.profiles import SMOKE_TRAIN, as_overrides

    run_dir = targets_dir.parent / "smoke-run"
    proc = _spawn([sys.executable, "-m", "peirce.cli.main", "train", "configs/train-deduction.yaml",
                   *as_overrides({**SMOKE_TRAIN, "trainer.max_steps": 1000, "tasks.n_per_level": 400,
                                  "algorithm.kl_coef": 0.001}),
                   f"run_dir={run_dir}", "--no-progress"],
                  targets_dir.parent / "smoke.log",
                  env={"PEIRCE_PROM_TARGETS_DIR": str(targets_dir), "VLLM_HOST_IP": "127.0.0.1",
                       "RAY_ADDRESS": ""})
    # Ready once samples were both generated and trained on (vLLM and DeepSpeed start-up first).
    deadline = time.monotonic() + 900
    while not {"peirce_rollout_samples_total", "peirce_trained_samples_total"} <= _positive_series(targets_dir):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stopper(proc)()
            raise RuntimeError(f"smoke run trained nothing; see {targets_dir.parent / 'smoke.log'}")
        time.sleep(2)
    return MetricsSource(runs=("deduction",), stop=_stopper(proc), rate_window="2m", startup_timeout=300,
                         # a clean run rejects no frame; a run without algorithm.meta has no MASA series
                         # (the synthetic source and tests/trainer/test_masa_e2e.py cover those), nor,
                         # without rollout.interrupt_on_new_weights, partial-rollout series; an engine
                         # that keeps up skips no weight version
                         may_be_empty=frozenset({"Rejected frames / s", "Partial rollouts",
                                                 "Weight versions skipped / s", *MASA_PANELS}))


def wait_all_up(prometheus: PrometheusServer, targets_dir: Path, timeout: float) -> None:
    """Until every exporter announced in `targets_dir` is scraped and up."""
    def all_up():
        announced = set()
        for p in targets_dir.glob("*.json"):
            try:
                announced.add(json.loads(p.read_text())[0]["targets"][0])
            except FileNotFoundError:  # withdrawn between glob and read
                pass
        up = {t["labels"]["instance"] for t in prometheus.active_targets("peirce") if t["health"] == "up"}
        return announced and announced <= up
    prometheus.wait_until(all_up, timeout=timeout, what="every announced exporter scraped")


SOURCES: dict[str, Callable[[Path], MetricsSource]] = {"synthetic": synthetic_source, "smoke": smoke_train_source}
