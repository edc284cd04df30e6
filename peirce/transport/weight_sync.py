"""Versioned weight broadcast, learner -> rollout engines, with no missed versions.

Transport: the publisher binds a ROUTER socket, each subscriber connects a DEALER with
its own identity. Why not PUB/SUB: PUB silently drops for a subscriber that is not yet
connected or is past its high-water mark, and it cannot tell who got what. ROUTER sends
to one named peer, and with ROUTER_MANDATORY a send to a peer that is gone, or whose
queue is full, raises instead of dropping; the publisher then evicts that peer. So every
bucket is either queued, in order, to a live registered peer, or the publisher knows it
was not. On top of that, the application-level handshake closes the remaining gaps:

1. A subscriber sends READY(version it has). The publisher registers it and, if a newer
   version exists, sends the latest one at once (late joiners catch up immediately).
2. `publish(state_dict, version)` packs the weights into checksummed buckets (one copy),
   queues all buckets to every registered subscriber, then waits until each ACKs that
   version or `ack_timeout` passes. Peers that time out are evicted, so a dead or stuck
   engine never blocks publishing for longer than `ack_timeout`; BYE / `remove()`
   unregister without waiting at all.
3. The subscriber verifies each bucket's checksum and the bucket sequence; a bad bucket
   makes it NACK and the publisher resends the latest version. A subscriber that waits
   longer than `heartbeat_s` sends HEARTBEAT(version). Older or duplicate versions are
   dropped by version number, so each version is applied at most once, in order.
4. Only READY registers. Anything else from an unregistered peer (an evicted one's late
   ACK or HEARTBEAT) is counted (`unknown_peer`) and answered REJOIN, on which the
   subscriber sends READY and is brought to the latest version. A peer that was evicted
   for a missed ACK comes back *on probation*: it is sent every version, but no publish
   waits for its ACK until it has ACKed a version again. So a subscriber that never ACKs
   costs one `ack_timeout` once, not on every publish.

Every registered subscriber therefore receives every version published while it is
registered, in order, exactly once; one that (re)joins starts from the latest version.

The publisher keeps the latest packed version (about one model's size) to serve late
joiners. A background thread owns the ROUTER socket (ZeroMQ sockets are not
thread-safe); callers talk to it through a queue and an inproc wake-up socket.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
import zmq

from peirce.transport.buckets import DEFAULT_BUCKET_BYTES, BucketPlan, pack, unpack, verify
from peirce.transport.frames import FrameError, RejectCounter, decode, encode
from peirce.transport.wire import Control, ControlKind, WeightBucketMsg

log = logging.getLogger(__name__)

CONTROL_MAX_BYTES = 1 << 16
WEIGHT_MAX_FRAME_BYTES = 1 << 34
WEIGHT_MAX_HEADER_BYTES = 1 << 24  # a full tensor table (MAX_TENSORS_PER_BUCKET specs) fits
PEER_HWM = 100_000  # messages (buckets) queued per peer; they reference shared buffers
MAX_REMEMBERED_MISSES = 4096  # evicted-for-a-missed-ACK identities kept for probation


@dataclass
class PublishStats:
    version: int
    n_buckets: int
    payload_bytes: int  # one copy of the packed weights
    bytes_sent: int = 0  # payload bytes queued, summed over subscribers
    sent_to: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)  # timed out, gone, or full
    not_awaited: list[str] = field(default_factory=list)  # sent to, on probation: its ACK was not waited for
    pack_seconds: float = 0.0
    seconds: float = 0.0  # first send to last ACK (or eviction)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Job:
    version: int
    frames: list[list]  # encoded bucket messages
    stats: PublishStats
    timeout: float
    pending: set[bytes] = field(default_factory=set)
    deadline: float = 0.0
    t0: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Sub:
    version: int = -1  # last version it reported (READY / ACK / HEARTBEAT)
    sending: int = -1  # last version queued to it
    awaited: bool = True  # publish waits for its ACK; False on probation after a missed ACK


def _sid(ident: bytes) -> str:
    """Printable subscriber id: its chosen name, or hex for ZeroMQ's binary auto-ids."""
    try:
        return ident.decode()
    except UnicodeDecodeError:
        return "0x" + ident.hex()


def _version_of(msg: Control) -> int:
    v = msg.payload.get("version", -1)
    if not isinstance(v, int):
        raise FrameError("invalid", f"control {msg.kind.value}: payload version {v!r} is not an int")
    return v


class WeightPublisher:
    """Learner side: binds, registers subscribers, publishes versions. Thread-safe API."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*", *, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 ack_timeout: float = 60.0, context: zmq.Context | None = None) -> None:
        self.bucket_bytes = bucket_bytes
        self.ack_timeout = ack_timeout
        self.rejected = RejectCounter()
        self.stats: list[PublishStats] = []
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        for opt, val in ((zmq.LINGER, 0), (zmq.ROUTER_MANDATORY, 1), (zmq.SNDHWM, PEER_HWM), (zmq.RCVHWM, PEER_HWM)):
            self._sock.setsockopt(opt, val)
        self._sock.bind(endpoint)
        self.endpoint: str = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        wake_addr = f"inproc://peirce-weights-{uuid.uuid4().hex}"
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.bind(wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PAIR)
        self._wake_tx.connect(wake_addr)
        self._cmds: queue.Queue = queue.Queue()
        self._lock = threading.Lock()  # guards the caller-side wake socket
        self._publish_lock = threading.Lock()  # one publish at a time (plan cache, ordering)
        self._plan: BucketPlan | None = None
        self._subs: dict[bytes, _Sub] = {}
        self._missed: dict[bytes, None] = {}  # evicted for a missed ACK (insertion-ordered, bounded)
        self._latest: _Job | None = None
        self._active: _Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="weight-publisher", daemon=True)
        self._thread.start()

    # -- caller API --------------------------------------------------------------------
    @property
    def subscribers(self) -> dict[str, int]:
        """Registered subscriber id -> last version it reported."""
        return {_sid(k): s.version for k, s in list(self._subs.items())}

    @property
    def rejected_frames(self) -> dict[str, int]:
        return self.rejected.as_dict()

    @property
    def latest_version(self) -> int | None:
        job = self._latest
        return None if job is None else job.version

    def publish(self, state_dict: Mapping[str, torch.Tensor], version: int,
                timeout: float | None = None) -> PublishStats:
        """Send `version` to every registered subscriber and wait for ACKs (or evictions)."""
        with self._publish_lock:
            latest = self.latest_version
            if latest is not None and version <= latest:
                raise ValueError(f"version: {version} must be greater than the last published {latest}")
            t0 = time.perf_counter()
            if self._plan is None or not self._plan.matches(state_dict):
                self._plan = BucketPlan.from_state_dict(state_dict, self.bucket_bytes)
            buckets = pack(state_dict, self._plan, version)
            frames = [encode(WeightBucketMsg(header=h, data=buf)) for h, buf in buckets]
            stats = PublishStats(version, len(buckets), sum(len(b) for _, b in buckets),
                                 pack_seconds=time.perf_counter() - t0)
            job = _Job(version, frames, stats, self.ack_timeout if timeout is None else timeout)
            self._command(("publish", job))
            while not job.done.wait(0.5):
                if not self._thread.is_alive():
                    raise RuntimeError("publisher thread died; see the log")
        return job.stats

    def remove(self, subscriber_id: str) -> None:
        """Unregister a subscriber; an ACK it owes is no longer awaited."""
        self._command(("remove", subscriber_id))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._command(("stop", None))
        self._thread.join(timeout=10)
        with self._lock:
            self._wake_tx.close()

    def __enter__(self) -> WeightPublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _command(self, cmd: tuple) -> None:
        with self._lock:
            if self._closed and cmd[0] != "stop":
                raise RuntimeError("publisher is closed")
            self._cmds.put(cmd)
            self._wake_tx.send(b"")

    # -- publisher thread ----------------------------------------------------------------
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        try:
            while True:
                job = self._active
                wait_ms = 100 if job is None else max(0, min(100, int((job.deadline - time.monotonic()) * 1000)))
                events = dict(poller.poll(wait_ms))
                if self._wake_rx in events and not self._drain_commands():
                    break
                if self._sock in events:
                    while self._sock.poll(0, zmq.POLLIN):
                        frames = self._sock.recv_multipart(copy=False)
                        try:
                            self._on_message(frames)
                        except Exception:  # a bug must not stop weight sync for everyone
                            log.exception("publisher: failed handling a message from %r", frames[0].bytes)
                self._check_deadline()
        finally:
            if self._active is not None:
                self._finish(self._active)
            self._sock.close()
            self._wake_rx.close()

    def _drain_commands(self) -> bool:
        while self._wake_rx.poll(0, zmq.POLLIN):
            self._wake_rx.recv()
        while True:
            try:
                kind, arg = self._cmds.get_nowait()
            except queue.Empty:
                return True
            if kind == "stop":
                return False
            if kind == "remove":
                for ident in [i for i in self._subs if _sid(i) == arg]:
                    self._drop(ident, "removed")
            elif kind == "publish":
                self._start(arg)

    def _start(self, job: _Job) -> None:
        self._latest = self._active = job
        job.t0 = time.perf_counter()
        job.deadline = time.monotonic() + job.timeout
        for ident, sub in list(self._subs.items()):
            if self._send_version(ident, job):
                if sub.awaited:
                    job.pending.add(ident)
                else:
                    job.stats.not_awaited.append(_sid(ident))
        self._maybe_finish(job)

    def _send_version(self, ident: bytes, job: _Job) -> bool:
        """Queue every bucket of `job` to one peer; evict it if it is gone or full."""
        try:
            for frames in job.frames:
                self._sock.send_multipart([ident, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as e:  # EHOSTUNREACH (gone) or EAGAIN (queue full)
            self._drop(ident, f"send failed: {e}")
            return False
        self._subs[ident].sending = job.version
        job.stats.bytes_sent += job.stats.payload_bytes
        job.stats.sent_to.append(_sid(ident))
        return True

    def _on_message(self, frames: list) -> None:
        ident = frames[0].bytes
        try:
            msg = decode(frames[1:], max_frame_bytes=CONTROL_MAX_BYTES, expect=Control)
            version = _version_of(msg)
        except FrameError as err:
            self.rejected.record(err, f"publisher {self.endpoint} from {ident!r}")
            return
        kind, sub = msg.kind, self._subs.get(ident)
        if kind is ControlKind.BYE:
            self._drop(ident, "bye")
            return
        if sub is None:
            if kind is not ControlKind.READY:  # evicted or never registered: only READY registers
                self._send_rejoin(ident)
                self.rejected.record(FrameError("unknown_peer", f"{kind.value} from unregistered {_sid(ident)}; "
                                                                "told REJOIN"), f"publisher {self.endpoint}")
                return
            sub = self._subs[ident] = _Sub(awaited=ident not in self._missed)
            log.info("subscriber %s registered at version %d%s", _sid(ident), version,
                     "" if sub.awaited else " (on probation: missed an ACK before)")
        sub.version = max(sub.version, version) if kind is not ControlKind.READY else version
        if kind in (ControlKind.READY, ControlKind.NACK):
            sub.sending = -1  # it has nothing in flight that it will keep
        if kind is ControlKind.ACK and not sub.awaited and version >= sub.sending:
            sub.awaited = True  # ACKs again: publishes wait for it again
            self._missed.pop(ident, None)
        job = self._active
        if kind is ControlKind.ACK and job is not None and version >= job.version and ident in job.pending:
            job.pending.discard(ident)
            job.stats.acked.append(_sid(ident))
            self._maybe_finish(job)
        latest = self._latest
        if latest is not None and latest.version > max(sub.version, sub.sending):
            self._send_version(ident, latest)

    def _send_rejoin(self, ident: bytes) -> None:
        try:
            self._sock.send_multipart([ident, *encode(Control(kind=ControlKind.REJOIN))], flags=zmq.NOBLOCK)
        except zmq.ZMQError:  # gone or full: it will speak again
            pass

    def _drop(self, ident: bytes, why: str) -> None:
        if self._subs.pop(ident, None) is None:
            return
        level = logging.INFO if why in ("bye", "removed") else logging.WARNING
        log.log(level, "subscriber %s unregistered: %s", _sid(ident), why)
        job = self._active
        if job is not None and ident in job.pending:
            job.pending.discard(ident)
            job.stats.evicted.append(_sid(ident))
            self._maybe_finish(job)

    def _check_deadline(self) -> None:
        job = self._active
        if job is not None and time.monotonic() >= job.deadline:
            for ident in list(job.pending):
                self._drop(ident, f"no ACK for version {job.version} within {job.timeout:.1f}s")
                self._missed[ident] = None
                if len(self._missed) > MAX_REMEMBERED_MISSES:
                    del self._missed[next(iter(self._missed))]
            self._maybe_finish(job)

    def _maybe_finish(self, job: _Job) -> None:
        if not job.pending and self._active is job:
            self._finish(job)

    def _finish(self, job: _Job) -> None:
        job.stats.seconds = time.perf_counter() - job.t0
        self.stats.append(job.stats)
        self._active = None
        job.done.set()


@dataclass
class ReceiveStats:
    version: int
    n_buckets: int
    bytes: int
    seconds: float  # first bucket to last bucket


class WeightSubscriber:
    """Engine side: connects, registers, and yields each new version's tensors.

    Not thread-safe: use it from one thread (the engine's loop). Tensors yielded by
    `receive` are views of the received frames; they stay valid while referenced.
    """

    def __init__(self, endpoint: str, *, name: str | None = None, version: int = -1,
                 heartbeat_s: float = 2.0, max_frame_bytes: int = WEIGHT_MAX_FRAME_BYTES,
                 auto_ack: bool = True, context: zmq.Context | None = None) -> None:
        self.name = name or f"sub-{uuid.uuid4().hex[:8]}"
        self.version = version
        self.heartbeat_s = heartbeat_s
        self.max_frame_bytes = max_frame_bytes
        self.auto_ack = auto_ack
        self.rejected = RejectCounter()
        self.stats: list[ReceiveStats] = []
        self._sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
        for opt, val in ((zmq.LINGER, 500), (zmq.RCVHWM, PEER_HWM), (zmq.IDENTITY, self.name.encode())):
            self._sock.setsockopt(opt, val)
        self._sock.connect(endpoint)
        self._partial: list[WeightBucketMsg] = []
        self._t_first = 0.0
        self.rejoins = 0  # times the publisher told us to READY again
        self._control(ControlKind.READY, version)

    @property
    def rejected_frames(self) -> dict[str, int]:
        return self.rejected.as_dict()

    def _control(self, kind: ControlKind, version: int, **extra) -> None:
        msg = Control(kind=kind, payload={"version": version, **extra})
        try:  # never block: with the publisher away, a heartbeat may be skipped
            self._sock.send_multipart(encode(msg), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("subscriber %s: control %s not queued (publisher unreachable)", self.name, kind.value)
        self._last_sent = time.monotonic()

    def ack(self, version: int) -> None:
        """Confirm `version` (only needed with auto_ack=False, e.g. after applying it)."""
        self._control(ControlKind.ACK, version)

    def receive(self, timeout: float | None = None) -> tuple[int, Iterator[tuple[str, torch.Tensor]]] | None:
        """Wait for the next complete, verified version: (version, named tensors) or None."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if now - self._last_sent >= self.heartbeat_s:
                self._control(ControlKind.HEARTBEAT, self.version)
            wait = self._last_sent + self.heartbeat_s - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            if not self._sock.poll(max(0, int(wait * 1000)) + 1, zmq.POLLIN):
                continue
            done = self._on_bucket(self._sock.recv_multipart(copy=False))
            if done is not None:
                return done

    def _on_bucket(self, frames: list) -> tuple[int, Iterator[tuple[str, torch.Tensor]]] | None:
        try:
            msg = decode(frames, max_frame_bytes=self.max_frame_bytes, max_header_bytes=WEIGHT_MAX_HEADER_BYTES)
            if isinstance(msg, Control) and msg.kind is ControlKind.REJOIN:  # we were evicted: register again
                self.rejoins += 1
                self._control(ControlKind.READY, self.version)
                return None
            if not isinstance(msg, WeightBucketMsg):
                raise FrameError("type", f"expected WeightBucketMsg or REJOIN, got {type(msg).__name__}")
            h = msg.header
            if h.version <= self.version:
                raise FrameError("stale", f"bucket of version {h.version}, already at {self.version}")
            if h.bucket_index == 0:
                self._partial, self._t_first = [], time.perf_counter()
            elif not self._partial or self._partial[0].header.version != h.version \
                    or len(self._partial) != h.bucket_index:
                self._partial = []
                raise FrameError("sequence", f"bucket {h.bucket_index} of version {h.version} out of sequence")
            verify(h, msg.data)
        except FrameError as err:
            self.rejected.record(err, f"subscriber {self.name}")
            if err.reason == "checksum":
                self._partial = []
                self._control(ControlKind.NACK, self.version, reason=err.detail)
            return None
        self._partial.append(msg)
        if len(self._partial) < h.n_buckets:
            return None
        parts, self._partial = self._partial, []
        self.version = h.version
        self.stats.append(ReceiveStats(h.version, len(parts), sum(p.header.nbytes for p in parts),
                                       time.perf_counter() - self._t_first))
        if self.auto_ack:
            self.ack(h.version)
        tensors = itertools.chain.from_iterable(unpack(p.header, p.data, check=False) for p in parts)
        return h.version, tensors

    def close(self) -> None:
        try:
            self._sock.send_multipart(encode(Control(kind=ControlKind.BYE)), flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        self._sock.close()

    def __enter__(self) -> WeightSubscriber:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
