"""The control socket on real loopback ZeroMQ: Python call and `peirce scale` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from peirce.trainer.control import ControlError, ControlRequest, ControlServer, scale, send_control
from peirce.trainer.run_dir import RunDir


@pytest.fixture
def live_run(tmp_path):
    run = RunDir.create(tmp_path / "run")
    state = {"rollout": 1, "reward": 1}

    def handler(req: ControlRequest) -> dict:
        if req.op == "stop":
            state["stopping"] = True
        if req.op == "scale":
            if req.rollout is not None:
                if req.rollout > 8:
                    raise ValueError(f"rollout={req.rollout} exceeds the limit of 8")
                state["rollout"] = req.rollout
            if req.reward is not None:
                state["reward"] = req.reward
        return dict(state)

    server = ControlServer(run, handler)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            server.poll()
            time.sleep(0.01)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield run, state
    stop.set()
    t.join()
    server.close()


def test_python_scale_call_changes_state(live_run):
    run, state = live_run
    assert scale(run.root, rollout=3) == {"rollout": 3, "reward": 1}
    assert send_control(run.root, ControlRequest(op="status")) == {"rollout": 3, "reward": 1}


def test_handler_refusal_reaches_caller(live_run):
    run, _ = live_run
    with pytest.raises(ControlError, match="exceeds the limit"):
        scale(run.root, rollout=99)


def test_cli_scale(live_run):
    run, state = live_run
    out = subprocess.run(
        [sys.executable, "-m", "peirce.cli.main", "scale", str(run.root), "rollout=2", "reward=4"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert state == {"rollout": 2, "reward": 4}
    bad = subprocess.run(
        [sys.executable, "-m", "peirce.cli.main", "scale", str(run.root), "gpus=2"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0 and "expected rollout=N or reward=M" in bad.stderr


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peirce.cli.main", *args], capture_output=True, text=True,
                          timeout=60)


def test_cli_status_and_stop(live_run, tmp_path):
    run, state = live_run
    status = _cli("scale", str(run.root))
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {"rollout": 1, "reward": 1}
    stopped = _cli("stop", str(run.root))
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["stopping"] is True
    nothing = _cli("stop", str(tmp_path / "elsewhere"), "--timeout", "2")
    assert nothing.returncode == 1 and nothing.stderr.startswith("peirce stop: ") and "no live run" in nothing.stderr


def test_no_live_run_is_a_clear_error(tmp_path):
    with pytest.raises(ControlError, match="no live run"):
        scale(tmp_path, rollout=1)
    with pytest.raises(ControlError, match="must be >= 0"):
        scale(tmp_path, rollout=-1)
