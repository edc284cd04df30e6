"""A private single-node Ray cluster for deploy tests, and job submission through deploy/ray/submit.sh.

Isolation from any other Ray on the machine: its own --temp-dir (so its own address file and
sockets), every port chosen free (GCS, dashboard, agent, runtime-env agent, client server,
metrics), RAY_ADDRESS removed from the environment, and no `ray stop` (which kills every Ray
process on the host): `ray start --block` runs as our child and is stopped by its pid;
survivors are found by our session id or our temp dir in their command line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from peirce.monitoring.promtest import free_port

REPO = Path(__file__).resolve().parents[2]
SUBMIT = REPO / "deploy" / "ray" / "submit.sh"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def cluster_env() -> dict[str, str]:
    """The environment for `ray start`, `ray job submit` and so for every job: loopback, no auth."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    bindir = str(Path(sys.executable).parent)  # jobs run `python`: the venv's, as if activated
    env.update(PATH=f"{bindir}:{env.get('PATH', '')}", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", VLLM_HOST_IP="127.0.0.1")
    return env


@dataclass
class LocalRayCluster:
    num_cpus: int = 2
    object_store_bytes: int = 200 * 1024 * 1024
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prt-", dir="/tmp")))
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    submitted: list[str] = field(default_factory=list)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    @property
    def ray_sd_file(self) -> Path:
        """Ray's Prometheus file_sd (the shipped config's `ray` job reads it under /tmp/ray)."""
        return self.temp_dir / "prom_metrics_service_discovery.json"

    def start(self, timeout: float = 180.0) -> LocalRayCluster:
        names = ("gcs", "dashboard", "agent_http", "agent_grpc", "runtime_env", "client", "metrics")
        self.ports = {n: free_port() for n in names}
        p = self.ports
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
               "--node-ip-address=127.0.0.1", f"--port={p['gcs']}", f"--num-cpus={self.num_cpus}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={p['dashboard']}",
               f"--dashboard-agent-listen-port={p['agent_http']}", f"--dashboard-agent-grpc-port={p['agent_grpc']}",
               f"--runtime-env-agent-port={p['runtime_env']}", f"--ray-client-server-port={p['client']}",
               f"--metrics-export-port={p['metrics']}", f"--temp-dir={self.temp_dir}",
               f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats"]
        log = open(self.temp_dir / "ray-start.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=cluster_env(),
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.http("GET", "/api/jobs/")
                return self
            except (OSError, ValueError):
                time.sleep(1)
        self.stop()
        raise TimeoutError(f"Ray jobs API not up in {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        path = self.temp_dir / "ray-start.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def http(self, method: str, path: str) -> object:
        req = urllib.request.Request(f"{self.dashboard_url}{path}", method=method)
        with urllib.request.urlopen(req, timeout=15) as r:
            return json.loads(r.read() or b"null")

    # ------------------------------------------------------------ jobs
    def submit(self, entrypoint: list[str] | None = None, env: dict[str, str] | None = None,
               config: Path | None = None, submission_id: str | None = None) -> str:
        """Submit through deploy/ray/submit.sh (the job config), without waiting; returns the id."""
        sid = submission_id or f"peirce-test-{os.getpid()}-{len(self.submitted)}"
        cmd = ["bash", str(SUBMIT), "--address", self.dashboard_url, "--submission-id", sid, "--no-wait"]
        if config is not None:
            cmd += ["--config", str(config)]
        for k, v in (env or {}).items():
            cmd += ["--env", f"{k}={v}"]
        if entrypoint:
            cmd += ["--", *entrypoint]
        r = subprocess.run(cmd, env=cluster_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
        if r.returncode != 0:
            raise RuntimeError(f"submit.sh exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        self.submitted.append(sid)
        return sid

    def status(self, sid: str) -> str:
        return self.http("GET", f"/api/jobs/{sid}")["status"]

    def logs(self, sid: str) -> str:
        return self.http("GET", f"/api/jobs/{sid}/logs")["logs"]

    def wait(self, sid: str, timeout: float = 300.0) -> str:
        deadline, status = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            status = self.status(sid)
            if status in TERMINAL:
                return status
            time.sleep(1)
        raise TimeoutError(f"job {sid} still {status} after {timeout:.0f} s; logs:\n{self.logs(sid)[-3000:]}")

    # ------------------------------------------------------------ teardown
    def _our_pids(self) -> list[int]:
        """Processes of this cluster: in the `ray start` session, or naming our temp dir."""
        pids, mark = [], str(self.temp_dir).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = (entry / "stat").read_text()
                sid = int(stat.rsplit(")", 1)[1].split()[3])
                cmdline = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if (self.proc is not None and sid == self.proc.pid) or mark in cmdline:
                pids.append(int(entry.name))
        return pids

    def stop(self, timeout: float = 60.0) -> list[int]:
        """Stop running jobs, SIGTERM `ray start --block` (it tears its node down), then kill
        survivors by pid. Returns the pids that needed SIGKILL."""
        for sid in self.submitted:
            try:
                if self.status(sid) not in TERMINAL:
                    self.http("POST", f"/api/jobs/{sid}/stop")
            except (OSError, ValueError, KeyError):
                pass
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        deadline = time.monotonic() + 15
        while self._our_pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        killed = self._our_pids()
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return killed

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, exc_type, *exc: object) -> None:
        self.stop()
        if exc_type is None:  # keep logs of a failed run for reading
            shutil.rmtree(self.temp_dir, ignore_errors=True)
