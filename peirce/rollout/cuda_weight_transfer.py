"""Engine side of the CUDA weight-sync strategies: ZeroMQ control, vLLM's transfer engine bytes.

`CudaWeightsInbox` takes the place of `WeightsInbox` in a rollout worker when
`weight_sync.strategy` is nccl or cuda_ipc. Its thread connects a DEALER to the learner's
`CudaWeightSender`, registers with READY(version), and runs each `TransferOp` the learner
sends on the engine's vLLM `LLM` (init / start / update / finish / shutdown of vLLM's
weight-transfer API, with NCCL or CUDA IPC moving the bytes straight into the engine's
GPU weights), answering each with `OpDone`; after `finish` it sets the engine's policy
version and ACKs it. HEARTBEAT, REJOIN and BYE are the ZeroMQ strategy's.

Why the weights are applied here and not at the rollout loop's batch boundary, as the
ZeroMQ strategy does: an NCCL broadcast is a collective that the learner and every engine
enter together, so the engine must receive when the learner sends. Generation pauses
for it (the engine lock is held from `start` to `finish`), and a publish waits for each
engine's batch in progress, so `ack_timeout` must exceed one batch's generation time.
`take()` is therefore always None and the loop's own apply step does nothing.

The engine must be built with its strategy's `engine_kwargs` (vLLM's
`weight_transfer_config`) and `engine_env` (for cuda_ipc VLLM_ALLOW_INSECURE_SERIALIZATION=1:
IPC handles travel pickled, on one machine); see peirce.transport.strategies. CUDA is
reached only through the `TransferTarget`, so the control loop is tested on CPU with a
stand-in target.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from peirce.rollout.weights_inbox import InboxWaits
from peirce.transport import security
from peirce.transport.cuda_control import OpDone, TransferOp, decode_op, encode_op, is_op
from peirce.transport.frames import FrameError, RejectCounter, decode, encode
from peirce.transport.security import RunKeys
from peirce.transport.weight_sync import CONTROL_MAX_BYTES
from peirce.transport.wire import Control, ControlKind

log = logging.getLogger(__name__)

class TransferTarget(Protocol):
    """What the control loop drives: an engine's weight-transfer calls and its lock."""

    lock: threading.Lock

    @property
    def version(self) -> int: ...

    def init(self, init_info: dict[str, Any]) -> None: ...

    def start(self) -> None: ...

    def update(self, update_info: dict[str, Any]) -> None: ...

    def finish(self, version: int) -> None: ...

    def abort(self) -> None: ...

    def shutdown(self) -> None: ...


class EngineTarget:
    """A `RolloutEngine`'s vLLM `LLM` as a `TransferTarget` (vLLM's RLOfflineMixin calls).

    It uses the engine's lock, its `LLM` and its version field, as `load_weights` does: the
    CUDA path is another way in for the same weights (see the module docstring)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.lock = engine._lock

    @property
    def version(self) -> int:
        return int(self.engine.policy_version)

    def init(self, init_info: dict[str, Any]) -> None:
        self.engine._llm.init_weight_transfer_engine({"init_info": init_info})

    def start(self) -> None:
        self.engine._llm.start_weight_update()

    def update(self, update_info: dict[str, Any]) -> None:
        self.engine._llm.update_weights({"update_info": update_info})

    def finish(self, version: int) -> None:
        llm = self.engine._llm
        llm.finish_weight_update(weight_version=str(version))
        llm.reset_prefix_cache()  # cached KV came from the old weights
        self.engine._version = version

    def abort(self) -> None:
        """Close vLLM's update session after a failed transfer (the weights may be partly new;
        the inbox keeps generation paused until the next version)."""
        try:
            self.engine._llm.finish_weight_update()
        except Exception:  # no session open (the failure came before start), or it is broken
            log.warning("closing the weight-update session after an abort failed", exc_info=True)

    def shutdown(self) -> None:
        self.engine._llm.shutdown_weight_transfer_engine()


class CudaWeightsInbox(InboxWaits):
    """The rollout loop's inbox for nccl / cuda_ipc: applies versions as the learner sends them."""

    close_timeout_s = 10.0

    def __init__(self, endpoint: str, name: str, target: TransferTarget, *, heartbeat_s: float = 2.0,
                 hold_timeout_s: float = 600.0, on_weights: Callable[[int, float], None] | None = None,
                 context: zmq.Context | None = None, keys: RunKeys | None = None) -> None:
        self.name = name or f"sub-{uuid.uuid4().hex[:8]}"
        self.target = target
        self.heartbeat_s = heartbeat_s
        self.hold_timeout_s = hold_timeout_s  # release the engine if the learner vanishes mid-update
        self.on_weights = on_weights
        self.rejected = RejectCounter()
        self.rejoins = 0
        self.ops: list[str] = []  # ops run, in order (tests and logs)
        self.received_version = target.version
        self.receive_seconds: list[float] = []
        self._cond = threading.Condition()
        self._held_since: float | None = None  # the engine lock is held from start to finish
        self._stop = threading.Event()
        self._sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        for opt, val in ((zmq.LINGER, 500), (zmq.IDENTITY, self.name.encode())):
            self._sock.setsockopt(opt, val)
        security.connect(self._sock, keys)
        self._sock.connect(endpoint)
        self._last_sent = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"cuda-weights-{self.name}", daemon=True)
        self._thread.start()

    # -- the inbox interface of the rollout loop --------------------------------------------
    def take(self) -> None:
        """Always None: versions are applied on arrival (see the module docstring)."""
        return None

    # -- the control loop ----------------------------------------------------------------------
    def _control(self, kind: ControlKind, version: int) -> None:
        try:
            self._sock.send_multipart(encode(Control(kind=kind, payload={"version": version})), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("cuda inbox %s: control %s not queued (learner unreachable)", self.name, kind.value)
        self._last_sent = time.monotonic()

    def _loop(self) -> None:
        self._control(ControlKind.READY, self.target.version)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._held_since is not None and now - self._held_since > self.hold_timeout_s:
                    log.error("cuda inbox %s: no finish within %.0fs of start; releasing the engine", self.name,
                              self.hold_timeout_s)
                    self._release()
                if now - self._last_sent >= self.heartbeat_s:
                    self._control(ControlKind.HEARTBEAT, self.target.version)
                if self._sock.poll(100, zmq.POLLIN):
                    self._on_frames(self._sock.recv_multipart(copy=False))
        finally:
            self._release()
            try:
                self._sock.send_multipart(encode(Control(kind=ControlKind.BYE)), flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self._sock.close()

    def _on_frames(self, frames: list) -> None:
        if not is_op(frames):
            try:
                ctl = decode(frames, max_frame_bytes=CONTROL_MAX_BYTES, expect=Control)
                if ctl.kind is not ControlKind.REJOIN:
                    raise FrameError("type", f"expected REJOIN or a transfer op, got control {ctl.kind.value}")
            except FrameError as err:
                self.rejected.record(err, f"cuda inbox {self.name}")
                return
            self.rejoins += 1
            self._control(ControlKind.READY, self.target.version)
            return
        try:
            op = decode_op(frames, expect=TransferOp)
        except FrameError as err:
            self.rejected.record(err, f"cuda inbox {self.name}")
            return
        self._run(op)

    def _run(self, op: TransferOp) -> None:
        t0 = time.perf_counter()
        self.ops.append(op.op)
        try:
            if op.op in ("init", "shutdown"):
                if self._held_since is None:
                    with self.target.lock:
                        (self.target.init(op.info) if op.op == "init" else self.target.shutdown())
                else:  # mid-update (a re-form after a failure): the lock is ours already
                    (self.target.init(op.info) if op.op == "init" else self.target.shutdown())
            elif op.op == "start":
                if self._held_since is None:
                    self.target.lock.acquire()  # generation pauses until finish
                    self._held_since = time.monotonic()
                self._t_start = t0
                self.target.start()
            elif op.op == "update":
                self.target.update(op.info)
            elif op.op == "finish":
                self.target.finish(op.version)
                self._release()
            elif op.op == "abort" and self._held_since is not None:
                self.target.abort()  # the lock stays held: no generation on partly new weights
        except Exception as exc:  # answered, logged; the learner evicts us and we READY again
            # the learner unregisters us; we REJOIN. A lock held since `start` stays held (the weights may
            # be partly new) until the next version's finish, or the hold timeout
            log.exception("cuda inbox %s: %s of version %d failed", self.name, op.op, op.version)
            self._reply(OpDone(seq=op.seq, ok=False, error=f"{type(exc).__name__}: {str(exc)[:500]}"))
            return
        self._reply(OpDone(seq=op.seq, ok=True))
        if op.op == "finish":
            seconds = time.perf_counter() - getattr(self, "_t_start", t0)
            with self._cond:
                self.received_version = op.version
                self.receive_seconds.append(seconds)
                self._cond.notify_all()
            self._control(ControlKind.ACK, op.version)
            if self.on_weights:
                self.on_weights(op.version, seconds)

    def _reply(self, msg: OpDone) -> None:
        try:
            self._sock.send_multipart(encode_op(msg), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("cuda inbox %s: answer to op %d not queued (learner unreachable)", self.name, msg.seq)

    def _release(self) -> None:
        if self._held_since is not None:
            self._held_since = None
            self.target.lock.release()
