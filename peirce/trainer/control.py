"""The control socket of a live run: `peirce scale RUN rollout=N reward=M` and status.

A REP socket on loopback; its endpoint is written to `<run>/control.json` so any
process on the machine (the CLI, a notebook, a test) can reach the run without a Ray
client connection. Requests and replies are typed msgpack (msgspec), never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
import zmq

from peirce.trainer.run_dir import RunDir


class ControlRequest(msgspec.Struct, frozen=True, kw_only=True):
    op: Literal["scale", "status", "stop"]
    rollout: int | None = None
    reward: int | None = None


class ControlReply(msgspec.Struct, kw_only=True):
    ok: bool
    error: str = ""
    state: dict[str, Any] = {}


class ControlError(RuntimeError):
    pass


_REQ_DECODER = msgspec.msgpack.Decoder(ControlRequest)
_REPLY_DECODER = msgspec.msgpack.Decoder(ControlReply)
_ENC = msgspec.msgpack.Encoder()

Handler = Callable[[ControlRequest], dict[str, Any]]


class ControlServer:
    """Non-blocking: the orchestrator calls `poll()` once per loop iteration."""

    def __init__(self, run_dir: RunDir, handler: Handler, host: str = "127.0.0.1") -> None:
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind_to_random_port(f"tcp://{host}")
        self.endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._handler = handler
        self._run_dir = run_dir
        tmp = run_dir.control_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"endpoint": self.endpoint}))
        tmp.rename(run_dir.control_path)

    def poll(self) -> None:
        while self._sock.poll(0, zmq.POLLIN):
            raw = self._sock.recv()
            try:
                request = _REQ_DECODER.decode(raw)
                reply = ControlReply(ok=True, state=self._handler(request))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                reply = ControlReply(ok=False, error=f"malformed control request: {exc}")
            except Exception as exc:  # the handler refused (bad numbers, ...): tell the caller
                reply = ControlReply(ok=False, error=str(exc))
            self._sock.send(_ENC.encode(reply))

    def close(self) -> None:
        self._sock.close(0)
        self._run_dir.control_path.unlink(missing_ok=True)


def send_control(run: str | Path, request: ControlRequest, timeout_s: float = 30.0) -> dict[str, Any]:
    """Send one request to the live run at `run` (its directory); return its state."""
    control = Path(run) / "control.json"
    if not control.exists():
        raise ControlError(f"no live run at {run}: {control} not found (is the run still going?)")
    endpoint = json.loads(control.read_text())["endpoint"]
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send(_ENC.encode(request))
        if not sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            raise ControlError(f"run at {run} did not answer within {timeout_s:.0f} s ({endpoint})")
        reply = _REPLY_DECODER.decode(sock.recv())
    finally:
        sock.close(0)
    if not reply.ok:
        raise ControlError(reply.error)
    return reply.state


def scale(run: str | Path, rollout: int | None = None, reward: int | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
    """Change the number of rollout/reward workers of a live run; returns the new state."""
    if rollout is None and reward is None:
        raise ControlError("scale: give rollout=N and/or reward=M")
    for name, value in (("rollout", rollout), ("reward", reward)):
        if value is not None and value < 0:
            raise ControlError(f"scale: {name} must be >= 0, got {value}")
    return send_control(run, ControlRequest(op="scale", rollout=rollout, reward=reward), timeout_s)


def stop(run: str | Path, timeout_s: float = 60.0) -> dict[str, Any]:
    """Stop a live run gracefully: no new rollouts, train what was admitted, checkpoint."""
    return send_control(run, ControlRequest(op="stop"), timeout_s)
