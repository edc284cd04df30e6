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
2. `publish(state_dict, version)` packs the weights into checksummed buckets (one copy,
   into buffers reused from two versions ago once ZeroMQ has released them),
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

The rules of points 1, 2 and 4 live in `peirce.transport.sync_state.SubscriberBook`, a
state machine with no sockets; this module decodes frames, feeds it, and sends what it
says to send. `WeightSender` / `WeightReceiver` are the strategy interface the learner
and the engines' inbox use; `WeightPublisher` / `WeightSubscriber` are its ZeroMQ
implementation (`weight_sync.strategy: zmq`; the default `auto` uses it for other hosts; `peirce.transport.strategies`
also holds the CUDA ones, which move bytes through vLLM's weight-transfer engines).

The publisher keeps the latest packed version (about one model's size) to serve late
joiners, and packs the next one into a second buffer set (`MAX_ARENAS`); the two are
reused in turn, so steady-state publishing allocates nothing. A set a slow peer is still
being sent is never overwritten (ZeroMQ frame trackers); a one-off set is packed instead.
A background thread owns the ROUTER socket (ZeroMQ sockets are not thread-safe); callers
talk to it through a queue and an inproc wake-up socket.
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
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import zmq

from peirce.transport import security
from peirce.transport.buckets import DEFAULT_BUCKET_BYTES, BucketPlan, new_buffers, pack, unpack, verify
from peirce.transport.frames import FrameError, RejectCounter, decode, encode
from peirce.transport.security import RunKeys
from peirce.transport.sync_state import Round, SubscriberBook, sid
from peirce.transport.wire import Control, ControlKind, WeightBucketHeader, WeightBucketMsg

log = logging.getLogger(__name__)

CONTROL_MAX_BYTES = 1 << 16
WEIGHT_MAX_FRAME_BYTES = 1 << 34
WEIGHT_MAX_HEADER_BYTES = 1 << 24  # a full tensor table (MAX_TENSORS_PER_BUCKET specs) fits
PEER_HWM = 100_000  # messages (buckets) queued per peer; they reference shared buffers
MAX_ARENAS = 2  # reusable packing buffer sets: the latest version's, and the one being packed


@dataclass
class PublishStats:
    version: int
    n_buckets: int
    payload_bytes: int  # one copy of the packed weights
    bytes_sent: int = 0  # payload bytes queued, summed over the subscribers sent them by value
    sent_to: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)  # timed out, gone, or full
    not_awaited: list[str] = field(default_factory=list)  # sent to, on probation: its ACK was not waited for
    pack_seconds: float = 0.0
    seconds: float = 0.0  # first send to last ACK (or eviction)
    reused_buffers: bool = False  # packed into an arena of an earlier version (no fresh pages)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_sent / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Arena:
    """One version's worth of bucket buffers, reused once ZeroMQ has let go of them.

    Every data frame is sent as a tracked `zmq.Frame`; its tracker is done only when no
    queued message and no `_Job` references the bytes any more, so a buffer that a slow
    peer is still being sent is never overwritten.
    """

    buffers: list
    trackers: list = field(default_factory=list)

    def free(self) -> bool:
        return all(t.done for t in self.trackers)


@dataclass
class _Job:
    version: int
    frames: list[list]  # encoded bucket messages
    stats: PublishStats
    timeout: float
    round: Round | None = None
    t0: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    buckets: list = field(default_factory=list)  # (header, buffer) as packed, for frames built per peer
    arena: _Arena | None = None
    value_frames: list[list] | None = None  # by value, where `frames` are references (auto, for other hosts)


def control_version(msg: Control) -> int:
    """The version a control message reports; FrameError when it is not an int."""
    v = msg.payload.get("version", -1)
    if not isinstance(v, int):
        raise FrameError("invalid", f"control {msg.kind.value}: payload version {v!r} is not an int")
    return v


@runtime_checkable
class WeightSender(Protocol):
    """Learner side of a weight-sync strategy: make `version` the engines' weights."""

    def publish(self, state_dict: Mapping[str, torch.Tensor], version: int,
                timeout: float | None = None) -> PublishStats: ...

    def close(self) -> None: ...


@runtime_checkable
class WeightReceiver(Protocol):
    """Engine side: the next complete version as (version, named tensors), or None on timeout
    (the shared-memory receiver gives a `peirce.transport.shm_sync.SharedVersion` instead)."""

    def receive(self, timeout: float | None = None) -> tuple[int, Iterator[tuple[str, torch.Tensor]]] | None: ...

    def close(self) -> None: ...


class WeightPublisher:
    """Learner side: binds, registers subscribers, publishes versions. Thread-safe API.

    The ZeroMQ `WeightSender`. Who gets what and whose ACK is awaited is decided by a
    `SubscriberBook` (peirce.transport.sync_state); this class moves its bytes.
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*", *, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 ack_timeout: float = 60.0, context: zmq.Context | None = None, keys: RunKeys | None = None,
                 dtype: torch.dtype | None = None) -> None:
        """`dtype`: send floating tensors in this dtype, converted while packing (the
        engines' dtype: a fp32 learner then needs no converted copy of its own)."""
        self.bucket_bytes = bucket_bytes
        self.dtype = dtype
        self.ack_timeout = ack_timeout
        self.rejected = RejectCounter()
        self.stats: list[PublishStats] = []
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        for opt, val in ((zmq.LINGER, 0), (zmq.ROUTER_MANDATORY, 1), (zmq.SNDHWM, PEER_HWM), (zmq.RCVHWM, PEER_HWM)):
            self._sock.setsockopt(opt, val)
        security.serve(self._sock, keys, self.rejected)  # CURVE when the run spans nodes
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
        self._arenas: list[_Arena] = []  # packing buffers for self._plan, reused across publishes
        self._book = SubscriberBook(self)  # touched by the publisher thread only
        self._latest: _Job | None = None  # the frames the book's `latest` version is sent as
        self._active: _Job | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="weight-publisher", daemon=True)
        self._thread.start()

    # -- caller API --------------------------------------------------------------------
    @property
    def subscribers(self) -> dict[str, int]:
        """Registered subscriber id -> last version it reported."""
        return {sid(k): p.version for k, p in list(self._book.peers.items())}

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
            if self._plan is None or not self._plan.matches(state_dict, self.dtype):
                self._plan = BucketPlan.from_state_dict(state_dict, self.bucket_bytes, self.dtype)
                self._arenas = []
            arena, reused = self._arena()
            buckets = self._pack(arena, state_dict, version)
            frames = [self._bucket_frames(arena, i, h, buf) for i, (h, buf) in enumerate(buckets)]
            stats = PublishStats(version, len(buckets), sum(len(b) for _, b in buckets),
                                 pack_seconds=time.perf_counter() - t0, reused_buffers=reused)
            job = _Job(version, frames, stats, self.ack_timeout if timeout is None else timeout, buckets=buckets,
                       arena=arena)
            self._command(("publish", job))
            while not job.done.wait(0.5):
                if not self._thread.is_alive():
                    raise RuntimeError("publisher thread died; see the log")
        return job.stats

    def _pack(self, arena: _Arena, state_dict: Mapping[str, torch.Tensor],
              version: int) -> list[tuple[WeightBucketHeader, np.ndarray]]:
        """Pack `version` into `arena` (checksummed: the bytes travel)."""
        return pack(state_dict, self._plan, version, out=arena.buffers, cast=self.dtype is not None)

    def _bucket_frames(self, arena: _Arena, index: int, header: WeightBucketHeader, buf) -> list:
        """One bucket as frames: its header and its bytes (tracked, so the arena is reused
        only once ZeroMQ has let go of them)."""
        head, *data = encode(WeightBucketMsg(header=header, data=buf))
        tracked = [zmq.Frame(d, track=True) for d in data]
        arena.trackers.extend(f.tracker for f in tracked)
        return [head, *tracked]

    def _arena(self) -> tuple[_Arena, bool]:
        """A buffer set no queued message references (reused), or a new one."""
        for arena in self._arenas:
            if arena.free():
                arena.trackers = []
                return arena, True
        arena = _Arena(new_buffers(self._plan))
        if len(self._arenas) < MAX_ARENAS:  # beyond that (a peer is slow): a one-off set
            self._arenas.append(arena)
        return arena, False

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
                rnd = self._book.active
                wait_ms = 100 if rnd is None else max(0, min(100, int((rnd.deadline - time.monotonic()) * 1000)))
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
                self._book.tick(time.monotonic())
                self._settle()
        finally:
            self._book.finish()
            self._settle()
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
                self._book.remove(arg)
            elif kind == "publish":
                self._latest = self._active = arg
                arg.t0 = time.perf_counter()
                arg.round = self._book.begin(arg.version, time.monotonic(), arg.timeout)
            self._settle()

    def _settle(self) -> None:
        """Hand a finished round's outcome back to the publishing caller."""
        job = self._active
        if job is None or job.round is None or not job.round.done:
            return
        rnd, s = job.round, job.stats
        s.sent_to, s.acked, s.evicted, s.not_awaited = rnd.sent_to, rnd.acked, rnd.evicted, rnd.not_awaited
        s.bytes_sent = sum(self._by_value(p) for p in rnd.sent_to) * s.payload_bytes
        s.seconds = time.perf_counter() - job.t0
        self.stats.append(s)
        self._active = None
        job.done.set()

    # -- the book's Wire ---------------------------------------------------------------
    def send_version(self, ident: bytes, version: int) -> bool:
        """Queue every bucket of the latest version to one peer (publisher thread only)."""
        job = self._latest
        if job is None or job.version != version:
            raise RuntimeError(f"version {version}: only the latest ({self.latest_version}) can be sent")
        try:
            for frames in self._frames_for(ident, job):
                self._sock.send_multipart([ident, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as e:  # EHOSTUNREACH (gone) or EAGAIN (queue full)
            log.warning("subscriber %s: send of version %d failed: %s", sid(ident), version, e)
            return False
        return True

    def _frames_for(self, ident: bytes, job: _Job) -> list[list]:
        """The frames one peer is sent a version as: the same for every peer here."""
        return job.frames

    def _by_value(self, subscriber_id: str) -> bool:
        """Whether this subscriber is sent the tensor bytes (not only where they lie)."""
        return True

    def _on_ready(self, ident: bytes, payload: dict) -> None:
        """A peer registered (or re-registered) with this READY payload; nothing to note here."""

    def send_rejoin(self, ident: bytes) -> None:
        try:
            self._sock.send_multipart([ident, *encode(Control(kind=ControlKind.REJOIN))], flags=zmq.NOBLOCK)
        except zmq.ZMQError:  # gone or full: it will speak again
            pass

    def _on_message(self, frames: list) -> None:
        ident = frames[0].bytes
        try:
            msg = decode(frames[1:], max_frame_bytes=CONTROL_MAX_BYTES, expect=Control)
            version = control_version(msg)
        except FrameError as err:
            self.rejected.record(err, f"publisher {self.endpoint} from {ident!r}")
            return
        if msg.kind is ControlKind.READY:
            self._on_ready(ident, msg.payload)
        if not self._book.on_control(ident, msg.kind.value, version):
            self.rejected.record(FrameError("unknown_peer", f"{msg.kind.value} from unregistered {sid(ident)}; "
                                                            "told REJOIN"), f"publisher {self.endpoint}")


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
                 auto_ack: bool = True, context: zmq.Context | None = None, keys: RunKeys | None = None) -> None:
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
        security.connect(self._sock, keys)
        self._sock.connect(endpoint)
        self._partial: list[WeightBucketMsg] = []
        self._t_first = 0.0
        self.rejoins = 0  # times the publisher told us to READY again
        self._ready()

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

    def _ready(self) -> None:
        self._control(ControlKind.READY, self.version, **self._ready_extra())

    def _ready_extra(self) -> dict:
        """What READY tells the publisher besides the version (a strategy's needs)."""
        return {}

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
                self._ready()
                return None
            h, data = self._payload(msg)
            if h.version <= self.version:
                raise FrameError("stale", f"bucket of version {h.version}, already at {self.version}")
            if h.bucket_index == 0:
                self._partial, self._t_first = [], time.perf_counter()
            elif not self._partial or self._partial[0][0].version != h.version \
                    or len(self._partial) != h.bucket_index:
                self._partial = []
                raise FrameError("sequence", f"bucket {h.bucket_index} of version {h.version} out of sequence")
            self._verify(h, data, msg)
            self._partial.append((h, data, msg))
            if len(self._partial) < h.n_buckets:
                return None
            parts, self._partial = self._partial, []
            payload = self._complete(h.version, parts)
        except FrameError as err:
            self.rejected.record(err, f"subscriber {self.name}")
            if err.reason == "checksum":
                self._partial = []
                self._control(ControlKind.NACK, self.version, reason=err.detail)
            return None
        self.version = h.version
        self.stats.append(ReceiveStats(h.version, len(parts), sum(p[0].nbytes for p in parts),
                                       time.perf_counter() - self._t_first))
        if self.auto_ack:
            self.ack(h.version)
        return h.version, payload

    def _verify(self, header: WeightBucketHeader, data: np.ndarray, msg) -> None:
        """Check a bucket's length and checksum on arrival (a bad one is NACKed and resent)."""
        verify(header, data)

    def _payload(self, msg) -> tuple[WeightBucketHeader, np.ndarray]:
        """A bucket message's header and bytes (FrameError for any other message)."""
        if not isinstance(msg, WeightBucketMsg):
            raise FrameError("type", f"expected WeightBucketMsg or REJOIN, got {type(msg).__name__}")
        return msg.header, msg.data

    def _complete(self, version: int, parts: list) -> Iterator[tuple[str, torch.Tensor]]:
        """What `receive` yields for a whole verified version: here, views of its buckets."""
        return itertools.chain.from_iterable(unpack(h, data, check=False) for h, data, _ in parts)

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
