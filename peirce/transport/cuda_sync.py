"""Learner side of the CUDA weight-sync strategies: ZeroMQ control, vLLM transfer engine bytes.

`CudaWeightSender` is a `WeightSender`. It binds a ROUTER like the ZeroMQ publisher and
keeps the same `SubscriberBook` (registration, awaited ACKs, eviction, probation,
REJOIN); the rules that differ for a collective transfer are in
peirce.transport.cuda_control. A publish:

1. `book.begin(version)` marks every registered peer due (or not, if its send failed);
2. the due peers form the transfer group (re-formed only when membership changed: vLLM's
   trainer engine `trainer_init` with this sender as its `VLLMWeightSyncClient`, so the
   engines' `init_weight_transfer_engine` runs over ZeroMQ while the learner opens NCCL
   rank 0);
3. vLLM's `send_weights()` drives start -> update (concurrent with the NCCL broadcast, or
   carrying the IPC handles) -> finish on every member, each call answered per member;
4. each engine ACKs the version after `finish`, and the round ends as the book says
   (ACKed, or evicted at `ack_timeout`).

A member that fails or does not answer a call within `ack_timeout` is evicted and the
group is re-formed at the next publish. Limits, stated rather than hidden: a member that
dies inside the NCCL broadcast leaves the others blocked in the same collective until
their rollout workers are replaced; the learner's publish still returns after
`ack_timeout` and reports them evicted.

vLLM is imported only when a group is formed (the learner's CUDA process), so this module
and its control plane are tested on CPU with a stand-in transfer engine (`trainer_factory`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import torch
import zmq

from peirce.transport import security
from peirce.transport.cuda_control import (DueBook, GroupPlan, OpDone, TransferOp, decode_op, encode_op, is_op,
                                           member_init_info, wire_update_info)
from peirce.transport.frames import FrameError, RejectCounter, decode, encode
from peirce.transport.security import RunKeys
from peirce.transport.sync_state import SubscriberBook, sid
from peirce.transport.weight_sync import CONTROL_MAX_BYTES, PublishStats, control_version
from peirce.transport.wire import Control, ControlKind

log = logging.getLogger(__name__)

BACKENDS = {"nccl": "nccl", "cuda_ipc": "ipc"}  # peirce strategy -> vLLM weight-transfer backend


class TransferError(RuntimeError):
    """One weight-transfer call failed or timed out on some members (named in `idents`)."""

    def __init__(self, message: str, idents: list[bytes]) -> None:
        super().__init__(message)
        self.idents = idents


@dataclass
class _Call:
    members: set[bytes]
    done: threading.Event = field(default_factory=threading.Event)
    errors: dict[bytes, str] = field(default_factory=dict)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def trainer_init_info(strategy: str, host: str, n_members: int, *, packed: bool, nccl_port: int = 0) -> Any:
    """vLLM's trainer-side init info for `strategy` and a group of `n_members` engines (imports vLLM)."""
    if strategy == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        return NCCLTrainerInitInfo(rank=0, master_address=host, master_port=nccl_port or free_port(host),
                                   world_size=1 + n_members, packed=packed)
    if strategy == "cuda_ipc":
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

        return IPCTrainerInitInfo(rank=0, packed=packed)
    raise ValueError(f"weight_sync.strategy: {strategy!r} has no vLLM transfer engine; valid: {sorted(BACKENDS)}")


def vllm_trainer_factory(strategy: str, host: str, *, packed: bool, nccl_port: int = 0) -> Callable:
    """`factory(client, holder, n_members) -> engine`: vLLM's trainer-side transfer engine for
    `strategy`, rendezvoused with the members through `client` (imports vLLM lazily)."""

    def build(client: Any, holder: _StateHolder, n_members: int) -> Any:
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

        info = trainer_init_info(strategy, host, n_members, packed=packed, nccl_port=nccl_port)
        return WeightTransferTrainerFactory.trainer_init(info, client=client, source=dict_source(holder))

    return build


def dict_source(holder: _StateHolder) -> Any:
    """A vLLM `WeightSource` over the state dict of the publish in progress (re-read each round)."""
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class StateDictSource(WeightSource):
        def metadata(self) -> list[ParamMeta]:
            return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in holder.state.items()]

        def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
            return iter(list(holder.state.items()))

    return StateDictSource()


@dataclass
class _StateHolder:
    state: Mapping[str, torch.Tensor] = field(default_factory=dict)


class CudaWeightSender:
    """Learner side of nccl / cuda_ipc; see the module docstring. Thread-safe `publish`."""

    def __init__(self, strategy: str, endpoint: str = "tcp://127.0.0.1:*", *, ack_timeout: float = 60.0,
                 trainer_factory: Callable | None = None, packed: bool = True, nccl_port: int = 0,
                 context: zmq.Context | None = None, keys: RunKeys | None = None) -> None:
        if strategy not in BACKENDS:
            raise ValueError(f"weight_sync.strategy: {strategy!r} is not a CUDA strategy; valid: {sorted(BACKENDS)}")
        self.strategy = strategy
        self.ack_timeout = ack_timeout
        self.rejected = RejectCounter()
        self.stats: list[PublishStats] = []
        self._sock = (context or zmq.Context.instance()).socket(zmq.ROUTER)
        for opt, val in ((zmq.LINGER, 0), (zmq.ROUTER_MANDATORY, 1)):
            self._sock.setsockopt(opt, val)
        security.serve(self._sock, keys, self.rejected)
        self._sock.bind(endpoint)
        self.endpoint: str = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        host = endpoint.split("://", 1)[1].rsplit(":", 1)[0]
        self._factory = trainer_factory or vllm_trainer_factory(strategy, host, packed=packed, nccl_port=nccl_port)
        self._sock_lock = threading.Lock()  # the I/O thread polls under it; senders take it to send
        self._lock = threading.Lock()  # guards the book, the due book and the calls
        self._publish_lock = threading.Lock()
        self.due = DueBook()
        self._book = SubscriberBook(self.due)
        self.plan = GroupPlan()
        self._engine: Any = None
        self._holder = _StateHolder()
        self._members: tuple[bytes, ...] = ()  # the group the client's calls go to
        self._version = -1  # the version the client's calls carry
        self._calls: dict[int, _Call] = {}
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cuda-weight-sender", daemon=True)
        self._thread.start()

    # -- caller API --------------------------------------------------------------------
    @property
    def subscribers(self) -> dict[str, int]:
        with self._lock:
            return {sid(k): p.version for k, p in self._book.peers.items()}

    @property
    def latest_version(self) -> int | None:
        return self._book.latest

    def publish(self, state_dict: Mapping[str, torch.Tensor], version: int,
                timeout: float | None = None) -> PublishStats:
        """Transfer `version` to every registered engine and wait for ACKs (or evictions)."""
        timeout = self.ack_timeout if timeout is None else timeout
        with self._publish_lock:
            t0 = time.perf_counter()
            payload = sum(t.numel() * t.element_size() for t in state_dict.values())
            stats = PublishStats(version, 0, payload)
            with self._lock:
                self.due.publishing = version
                try:
                    rnd = self._book.begin(version, time.monotonic(), timeout)  # raises for a stale version
                except Exception:
                    self.due.publishing = None
                    raise
                members = self.due.take_due(version)
            try:
                if members:
                    self._transfer(members, state_dict, version, timeout)
            finally:
                with self._lock:
                    self.due.publishing = None
            while True:
                with self._lock:
                    self._book.tick(time.monotonic())
                    if rnd.done:
                        break
                time.sleep(0.005)
            stats.sent_to, stats.acked, stats.evicted, stats.not_awaited = (rnd.sent_to, rnd.acked, rnd.evicted,
                                                                             rnd.not_awaited)
            stats.bytes_sent = len(members) * payload
            stats.seconds = time.perf_counter() - t0
            self.stats.append(stats)
            return stats

    def remove(self, subscriber_id: str) -> None:
        with self._lock:
            self._book.remove(subscriber_id)

    def close(self) -> None:
        if self._stop.is_set():
            return
        if self._engine is not None:
            self._release_group()
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> CudaWeightSender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the data plane: vLLM's trainer engine, with this object as its client ----------
    def _transfer(self, members: list[bytes], state_dict: Mapping[str, torch.Tensor], version: int,
                  timeout: float) -> None:
        self._holder.state = state_dict
        self._version = version
        try:
            if self._engine is None or self.plan.needs_regroup(members):
                if self._engine is not None:
                    self._release_group()
                self._members = self.plan.regroup(members)
                log.info("weight transfer (%s): forming a group of %d engine(s)", self.strategy, len(members))
                self._engine = self._run_bounded(lambda: self._factory(self, self._holder, len(members)), timeout)
            self._run_bounded(self._engine.send_weights, timeout)
        except Exception as exc:  # a collective: the group is unusable and no member has this version
            self.plan.broken()
            self._engine = None  # its communicator is unusable; shutting it down could hang too
            failed = exc.idents if isinstance(exc, TransferError) and exc.idents else list(members)
            healthy = [m for m in members if m not in failed]
            log.warning("weight transfer of version %d failed (%s: %s) on %s", version, type(exc).__name__, exc,
                        [sid(i) for i in failed], exc_info=not isinstance(exc, TransferError))
            if healthy:
                try:
                    self._call_members(healthy, "abort", version, {}, timeout=5.0)
                except TransferError as abort_exc:
                    log.warning("weight transfer abort: %s", abort_exc)
            with self._lock:
                for ident in members:
                    self._book.drop(ident, f"weight transfer of version {version} failed"
                                           + ("" if ident in failed else " on another member; aborted"))

    def _release_group(self) -> None:
        """Tell the old group's members still registered to drop their side (vLLM keeps one
        communicator per engine; a new group's init would otherwise leak the old), then ours."""
        with self._lock:
            members = [m for m in self._members if m in self._book.peers]
        if members:
            try:
                self._call_members(members, "shutdown", -1, {}, timeout=5.0)
            except TransferError as exc:
                log.warning("weight transfer shutdown: %s", exc)
        self._engine.shutdown()
        self._engine = None

    def _run_bounded(self, fn: Callable[[], Any], timeout: float) -> Any:
        """Run a (possibly collective) call, giving up after `timeout`: a hung NCCL call cannot
        be cancelled, so its thread is left behind and the members are evicted instead."""
        exe = ThreadPoolExecutor(max_workers=1, thread_name_prefix="weight-transfer")
        try:
            return exe.submit(fn).result(timeout=timeout + 5.0)
        except FutureTimeout:
            self._engine = None
            raise TransferError(f"no end within {timeout + 5.0:.0f}s", list(self._members)) from None
        finally:
            exe.shutdown(wait=False)

    # VLLMWeightSyncClient: what vLLM's trainer engine calls on "the inference side"
    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self._call_members(list(self._members), "init", -1, init_info)

    def start_weight_update(self) -> None:
        self._call_members(list(self._members), "start", self._version, {})

    def update_weights(self, update_info: dict[str, Any] | list[dict[str, Any]]) -> None:
        if isinstance(update_info, list):  # per-DP-rank payloads; peirce engines are one rank each
            raise TransferError("per-rank update payloads are not supported (one vLLM worker per engine)", [])
        self._call_members(list(self._members), "update", self._version, wire_update_info(update_info))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._call_members(list(self._members), "finish", self._version, {})

    def _call_members(self, members: list[bytes], op: str, version: int, info: dict[str, Any],
                      timeout: float | None = None) -> None:
        """Send one op to every member and wait for each answer; raise naming who failed."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            call = self._calls[seq] = _Call(set(members))
        try:
            for index, ident in enumerate(members):
                body = member_init_info(info, index) if op == "init" else info
                frames = encode_op(TransferOp(seq=seq, op=op, version=version, info=body))  # type: ignore[arg-type]
                try:
                    with self._sock_lock:
                        self._sock.send_multipart([ident, *frames], flags=zmq.NOBLOCK)
                except zmq.ZMQError as exc:
                    with self._lock:
                        call.errors[ident] = f"send failed: {exc}"
                        call.members.discard(ident)
            with self._lock:
                if not call.members:
                    call.done.set()
            limit = self.ack_timeout if timeout is None else timeout
            if not call.done.wait(limit):
                with self._lock:
                    late = sorted(call.members)
                raise TransferError(f"{op}: no answer within {limit:.1f}s from {[sid(i) for i in late]}", late)
            if call.errors:
                detail = "; ".join(f"{sid(i)}: {e}" for i, e in sorted(call.errors.items()))
                raise TransferError(f"{op} failed on {len(call.errors)} engine(s): {detail}", sorted(call.errors))
        finally:
            with self._lock:
                self._calls.pop(seq, None)

    # -- I/O thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                with self._sock_lock:
                    ready = self._sock.poll(10, zmq.POLLIN)
                    batch = [self._sock.recv_multipart(copy=False) for _ in range(64)
                             if self._sock.poll(0, zmq.POLLIN)] if ready else []
                for frames in batch:
                    try:
                        self._on_message(frames)
                    except Exception:  # a bug must not stop weight sync for everyone
                        log.exception("cuda sender: failed handling a message from %r", frames[0].bytes)
                with self._lock:
                    rejoins, self.due.rejoins = self.due.rejoins, []
                for ident in rejoins:
                    try:
                        with self._sock_lock:
                            self._sock.send_multipart([ident, *encode(Control(kind=ControlKind.REJOIN))],
                                                      flags=zmq.NOBLOCK)
                    except zmq.ZMQError:
                        pass
                if not batch:
                    time.sleep(0.001)  # let senders take the socket lock
        finally:
            with self._lock:
                self._book.finish()
            with self._sock_lock:
                self._sock.close()

    def _on_message(self, frames: list) -> None:
        ident, body = frames[0].bytes, frames[1:]
        if is_op(body):
            try:
                msg = decode_op(body, expect=OpDone)
            except FrameError as err:
                self.rejected.record(err, f"cuda sender from {sid(ident)}")
                return
            with self._lock:
                call = self._calls.get(msg.seq)
                if call is None or ident not in call.members:
                    return  # an answer to a call already given up on
                call.members.discard(ident)
                if not msg.ok:
                    call.errors[ident] = msg.error
                if not call.members:
                    call.done.set()
            return
        try:
            ctl = decode(body, max_frame_bytes=CONTROL_MAX_BYTES, expect=Control)
            version = control_version(ctl)
        except FrameError as err:
            self.rejected.record(err, f"cuda sender from {sid(ident)}")
            return
        with self._lock:
            known = self._book.on_control(ident, ctl.kind.value, version)
            if ident not in self._book.peers:
                self.due.forget(ident)
        if not known:
            self.rejected.record(FrameError("unknown_peer", f"{ctl.kind.value} from unregistered {sid(ident)}; "
                                                            "told REJOIN"), f"cuda sender {self.endpoint}")
