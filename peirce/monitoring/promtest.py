"""A real Prometheus server on loopback, fed by peirce exporters: for tests and local checks.

`render_config` takes the shipped deploy/prometheus/prometheus.yml and changes only
paths and intervals, so the tests exercise the file operators deploy. `PrometheusServer`
runs the Debian `prometheus` binary with a temporary TSDB on a free port and answers
PromQL through the HTTP API. `python -m peirce.monitoring.promtest synthetic --targets-dir D`
is a stand-in workload: exporters for two runs x two workers emitting every catalogue
metric with plausible values, announced through file_sd like real actors.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus.yml"


class PromQLError(RuntimeError):
    """Prometheus answered a query with an error (bad PromQL, timeout)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_config(targets_dir: str | Path, *, scrape_interval: str = "1s",
                  ray_sd_file: str | Path | None = None, base: Path = SHIPPED_CONFIG) -> dict[str, Any]:
    """The shipped config with file_sd paths and intervals replaced (the `ray` job is dropped
    when `ray_sd_file` is None)."""
    cfg = yaml.safe_load(Path(base).read_text())
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    if "peirce" not in jobs:
        raise ValueError(f"{base}: scrape_configs has no job_name 'peirce' (jobs: {sorted(jobs)})")
    cfg["global"].update(scrape_interval=scrape_interval, evaluation_interval=scrape_interval,
                         scrape_timeout=scrape_interval)
    kept = []
    for name, job in jobs.items():
        job["scrape_interval"] = scrape_interval
        if name == "peirce":
            files = [str(Path(targets_dir) / "*.json")]
        elif name == "ray" and ray_sd_file is not None:
            files = [str(ray_sd_file)]
        else:
            continue
        job["file_sd_configs"] = [{"files": files, "refresh_interval": scrape_interval}]
        kept.append(job)
    cfg["scrape_configs"] = kept
    return cfg


def check_config(path: str | Path, promtool: str = "promtool") -> subprocess.CompletedProcess:
    """`promtool check config PATH` (raises FileNotFoundError when promtool is missing)."""
    return subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)


@dataclass
class PrometheusServer:
    """One `prometheus` process with its own TSDB under `workdir`, on 127.0.0.1:<free port>."""

    config: dict[str, Any]
    workdir: Path
    binary: str = "prometheus"
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        if shutil.which(self.binary) is None:
            raise FileNotFoundError(f"{self.binary!r} not on PATH (deploy/prometheus/install.sh installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "prometheus.yml"
        conf.write_text(yaml.safe_dump(self.config, sort_keys=False))
        for _attempt in range(3):  # a free port can be taken between probing and binding
            self.port = free_port()
            log = open(self.workdir / "prometheus.log", "ab")
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={conf}", f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle",
                 "--storage.tsdb.retention.time=1h", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).read()
                    return self
                except OSError:
                    time.sleep(0.2)
            if self.proc.poll() is None:
                self.stop()
                break
        raise RuntimeError(f"prometheus did not become ready; log:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        path = self.workdir / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> PrometheusServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
            body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (each item has `metric` labels and `value`)."""
        return self.api("query", query=expr)["result"]

    def active_targets(self, job: str | None = None) -> list[dict[str, Any]]:
        targets = self.api("targets", state="active")["activeTargets"]
        return [t for t in targets if job is None or t["labels"].get("job") == job]

    def label_values(self, label: str, match: str) -> list[str]:
        return self.api(f"label/{label}/values", **{"match[]": match})

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
        """Poll `predicate` until it returns something truthy; its last value otherwise raises."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except PromQLError as exc:
                last = exc
            if last and not isinstance(last, Exception):
                return last
            time.sleep(0.5)
        raise TimeoutError(f"{what} not reached in {timeout:.0f} s (last: {last!r})\n{self.log_tail()}")


# ---------------------------------------------------------------- synthetic workload
TASK_LEVELS = {"deduction": ("1", "2"), "induction": ("1", "2"), "abduction": ("1", "2")}


def _tick_rollout(m, rng: random.Random, t: int, run: str) -> None:
    n = rng.randint(4, 16)
    m.inc("peirce_rollout_samples_total", n)
    m.inc("peirce_rollout_tokens_total", n * rng.randint(60, 190))
    m.observe("peirce_rollout_generate_seconds", rng.uniform(0.4, 6.0))
    m.set("peirce_rollout_policy_version", t // 5)
    for level in TASK_LEVELS.get(run, ("1",)):
        k = rng.randint(1, 4)
        for _ in range(k):
            m.add_reward(3.0 if rng.random() < 0.6 / int(level) else -0.5, task=run, level=level)
    if t % 5 == 0:
        m.observe("peirce_weight_sync_seconds", rng.uniform(0.2, 0.6), side="load")
        m.inc("peirce_weight_sync_bytes_total", 270e6, side="load")
        m.inc("peirce_weight_versions_skipped_total", float(rng.random() < 0.1))  # a lagging engine, now and then
    m.inc("peirce_rejected_frames_total", float(rng.random() < 0.2), reason="oversized")
    m.inc("peirce_rejected_frames_total", float(rng.random() < 0.1), reason="malformed")
    # partial rollouts: a batch interrupted now and then, its samples continued
    interrupted = rng.random() < 0.3
    m.inc("peirce_rollout_interrupts_total", float(interrupted))
    m.inc("peirce_rollout_interrupted_samples_total", float(interrupted * rng.randint(1, n)))
    m.inc("peirce_rollout_continuations_total", float(interrupted * rng.randint(1, n)))
    m.observe("peirce_rollout_version_span_steps", rng.choice((1, 1, 2)))


def _tick_learner(m, rng: random.Random, t: int, run: str) -> None:
    step = t // 5
    m.set("peirce_learner_step", step)
    m.set("peirce_learner_loss", 0.05 * math.exp(-step / 50) + rng.gauss(0, 0.01))
    m.set("peirce_learner_kl", 1e-3 * (1 + step / 10) * rng.uniform(0.8, 1.2))
    m.set("peirce_learner_entropy", 1.6 - 0.005 * step + rng.gauss(0, 0.02))
    m.set("peirce_learner_grad_norm", abs(rng.gauss(0.8, 0.2)))
    m.observe("peirce_learner_step_seconds", rng.uniform(8, 40))
    m.inc("peirce_trained_samples_total", 32)
    m.inc("peirce_trained_tokens_total", 32 * rng.randint(200, 320))
    streak = max(0, step % 12 - 8)  # a short stretch without learning signal every 12 steps
    m.set("peirce_trainer_no_signal_streak_steps", streak)
    m.inc("peirce_trainer_no_signal_steps_total", float(streak > 0 and t % 5 == 0))
    m.set("peirce_learner_logprob_gap_nats", abs(rng.gauss(0.02, 0.005)))
    for q in ("rollout", "reward", "train"):
        m.set("peirce_queue_depth_messages", rng.randint(0, 12), queue=q)
    m.inc("peirce_rejected_results_total", float(rng.random() < 0.05), queue="reward", reason="group")
    staleness = [rng.choice((0, 0, 1, 1, 2)) for _ in range(8)]
    for s in staleness:
        m.observe("peirce_staleness_steps", s)
    m.set("peirce_staleness_mean_steps", sum(staleness) / len(staleness))
    for level in TASK_LEVELS.get(run, ("1",)):
        m.set("peirce_reward_mean", min(1.0, rng.uniform(0.2, 0.7) + step / 200), task=run, level=level)
    # MASA (algorithm.meta): the meta reward and its parts, calibration, gating and token savings
    for part in ("all", "length", "pass_rate", "notions"):
        m.set("peirce_meta_reward_mean", min(1.0, rng.uniform(0.1, 0.5) + step / 300), part=part)
    m.set("peirce_meta_calibration_error", max(0.0, 0.4 - step / 400 + rng.gauss(0, 0.02)))
    m.set("peirce_meta_token_share", rng.uniform(0.15, 0.3))
    m.inc("peirce_meta_prompts_gated_total", float(rng.random() < 0.3))
    m.set("peirce_meta_gating_precision", rng.uniform(0.85, 0.97))
    m.set("peirce_meta_gating_recall", rng.uniform(0.75, 0.9))
    for by in ("gating", "cutoff"):
        m.inc("peirce_meta_tokens_saved_total", rng.randint(0, 2048), by=by)
    for role, n in (("rollout", 2), ("reward", 1), ("learner", 1)):
        m.set("peirce_workers", n, role=role)
    for role in ("learner", "rollout"):
        m.set("peirce_idle_ratio", rng.uniform(0.1, 0.6), role=role)
    if t % 5 == 0:
        m.observe("peirce_weight_sync_seconds", rng.uniform(0.05, 0.3), side="send")
        m.inc("peirce_weight_sync_bytes_total", 270e6, side="send")


def run_synthetic(targets_dir: str | Path, runs: tuple[str, ...] = ("deduction", "induction"),
                  interval: float = 0.25, stop: threading.Event | None = None,
                  ready: Callable[[dict[str, int]], None] | None = None) -> None:
    """Two exporters per run (`rollout-0`, `learner-0`) ticking until `stop` is set; targets withdrawn at the end."""
    from peirce.metrics import MetricsExporter

    stop = stop or threading.Event()
    workers = []
    for run in runs:
        for name, tick in (("rollout-0", _tick_rollout), ("learner-0", _tick_learner)):
            m = MetricsExporter(run=run, worker=name)
            rng = random.Random(f"{run}/{name}")
            tick(m, rng, 0, run)  # every series exists before the first scrape
            m.serve(targets_dir=targets_dir)
            workers.append((m, rng, tick, run))
    if ready:
        ready({f"{w[0].run}/{w[0].worker}": w[0].port for w in workers})
    t = 1
    try:
        while not stop.wait(interval):
            for m, rng, tick, run in workers:
                tick(m, rng, t, run)
            t += 1
    finally:
        for m, *_ in workers:
            m.withdraw()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m peirce.monitoring.promtest")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synthetic", help="serve every catalogue metric for fake runs until SIGTERM/SIGINT")
    s.add_argument("--targets-dir", required=True, help="file_sd directory to announce exporters in")
    s.add_argument("--runs", nargs="+", default=["deduction", "induction"])
    s.add_argument("--interval", type=float, default=0.25, help="seconds between updates")
    args = p.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_synthetic(args.targets_dir, tuple(args.runs), args.interval, stop,
                  ready=lambda ports: print(json.dumps({"ready": ports}), flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
