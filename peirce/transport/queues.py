"""Bounded message channels: ZeroMQ PUSH/PULL and an in-process twin with the same rules.

Guarantees (both implementations):

- Bounded: at most `hwm` messages wait per peer (ZeroMQ: SNDHWM on the sender plus
  RCVHWM on the receiver; in-process: `queue.Queue(maxsize=hwm)`).
- Never drops on a full queue: `send(msg, timeout)` blocks up to `timeout` seconds and
  returns False if the message was not accepted (back-pressure is visible to the caller,
  who may retry, shed load or slow down). `timeout=None` waits forever, `0` never waits.
  A PUSH socket with no connected peer is "full" too (`ZMQ_IMMEDIATE`), so a sender
  learns that nobody listens instead of queueing into the void.
- FIFO per sender; one message is all-or-nothing (multipart frames are atomic).
- `recv(timeout)` returns the next valid message or None on timeout. Malformed input
  (bad msgpack, wrong schema, wrong sizes, oversized) is counted in `rejected` per reason,
  logged, and skipped: a receiver never raises on what a peer sent.

What happens when a peer dies: messages already handed to a receiver that then dies (in
its receive queue, or in TCP buffers) are lost, so delivery is at-most-once per message.
Work that must not be lost is tracked by whoever dispatched it (see
`peirce.transport.dispatch`, which re-queues a dead worker's items). A sender that dies
loses only what it had not sent yet. A receiver restarted on the same endpoint is
reconnected to automatically by ZeroMQ.
"""

from __future__ import annotations

import abc
import queue
import time

import zmq

from peirce.transport.frames import DEFAULT_MAX_FRAME_BYTES, FrameError, RejectCounter, decode, encode
from peirce.transport.wire import Message

DEFAULT_HWM = 1000
LOOPBACK = "tcp://127.0.0.1:*"


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + max(0.0, timeout)


def _remaining_ms(deadline: float | None) -> int:
    return -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))


class Closable(abc.ABC):
    """A socket owner usable as a context manager (closed on exit)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SendChannel(Closable):
    @abc.abstractmethod
    def send(self, msg: Message, timeout: float | None = None) -> bool:
        """Queue `msg`; False if not accepted within `timeout` seconds (nothing sent)."""


class RecvChannel(Closable):
    rejected: RejectCounter  # add hooks here to export counts (e.g. Prometheus)

    @property
    def rejected_frames(self) -> dict[str, int]:
        """Rejected messages so far, per FrameError reason."""
        return self.rejected.as_dict()

    @abc.abstractmethod
    def recv(self, timeout: float | None = None) -> Message | None:
        """Next valid message, or None after `timeout` seconds."""


class Channel(SendChannel, RecvChannel):
    """Both ends in one object (in-process queues)."""


class LocalChannel(Channel):
    """In-process channel (threads of one process): same semantics, no sockets, no copies.

    Messages are passed by reference, so a sender must not mutate arrays after sending.
    """

    def __init__(self, hwm: int = DEFAULT_HWM) -> None:
        if hwm <= 0:
            raise ValueError(f"hwm: must be > 0, got {hwm}")
        self._q: queue.Queue = queue.Queue(maxsize=hwm)
        self.rejected = RejectCounter()
        self._closed = False

    def send(self, msg: Message, timeout: float | None = None) -> bool:
        if self._closed:
            raise RuntimeError("send on a closed channel")
        try:
            if timeout is not None and timeout <= 0:
                self._q.put_nowait(msg)
            else:
                self._q.put(msg, timeout=timeout)
        except queue.Full:
            return False
        return True

    def recv(self, timeout: float | None = None) -> Message | None:
        try:
            if timeout is not None and timeout <= 0:
                return self._q.get_nowait()
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self._closed = True


def _socket(kind: int, endpoint: str, bind: bool, hwm: int, ctx: zmq.Context | None) -> tuple[zmq.Socket, str]:
    if hwm <= 0:
        raise ValueError(f"hwm: must be > 0, got {hwm}")
    sock = (ctx or zmq.Context.instance()).socket(kind)
    sock.setsockopt(zmq.LINGER, 1000)  # bounded wait at close for in-flight messages
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    if bind:
        sock.bind(endpoint)
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    else:
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(endpoint)
    return sock, endpoint


class ZmqPushChannel(SendChannel):
    """Sending end. Connects by default (workers push results to a bound collector);
    `bind=True` for a dispatcher that many pullers connect to (round-robin)."""

    def __init__(self, endpoint: str, *, bind: bool = False, hwm: int = DEFAULT_HWM,
                 context: zmq.Context | None = None) -> None:
        self._sock, self.endpoint = _socket(zmq.PUSH, endpoint, bind, hwm, context)

    def send(self, msg: Message, timeout: float | None = None) -> bool:
        return self.send_frames(encode(msg), timeout)

    def send_frames(self, frames: list, timeout: float | None = None) -> bool:
        """Send pre-encoded frames (zero-copy for array frames)."""
        deadline = _deadline(timeout)
        while True:
            try:
                self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                wait = _remaining_ms(deadline)
                if wait == 0:
                    return False
                self._sock.poll(wait, zmq.POLLOUT)

    def close(self) -> None:
        self._sock.close()


class ZmqPullChannel(RecvChannel):
    """Receiving end. Binds on loopback with a random port by default; see `endpoint`."""

    def __init__(self, endpoint: str = LOOPBACK, *, bind: bool = True, hwm: int = DEFAULT_HWM,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES, rejected: RejectCounter | None = None,
                 context: zmq.Context | None = None) -> None:
        self._sock, self.endpoint = _socket(zmq.PULL, endpoint, bind, hwm, context)
        self.max_frame_bytes = max_frame_bytes
        self.rejected = rejected or RejectCounter()

    def recv_frames(self, timeout: float | None = None) -> list | None:
        """Raw frames (zmq.Frame, zero-copy) of the next message, or None on timeout."""
        if not self._sock.poll(_remaining_ms(_deadline(timeout)), zmq.POLLIN):
            return None
        return self._sock.recv_multipart(copy=False)

    def recv(self, timeout: float | None = None) -> Message | None:
        deadline = _deadline(timeout)
        while True:
            frames = self.recv_frames(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if frames is None:
                return None
            try:
                return decode(frames, max_frame_bytes=self.max_frame_bytes)
            except FrameError as err:
                self.rejected.record(err, self.endpoint)

    def close(self) -> None:
        self._sock.close()


def zmq_channel_pair(endpoint: str = LOOPBACK, hwm: int = DEFAULT_HWM) -> tuple[ZmqPushChannel, ZmqPullChannel]:
    """A bound PULL and a PUSH connected to it (tests, single-producer pipes)."""
    pull = ZmqPullChannel(endpoint, hwm=hwm)
    return ZmqPushChannel(pull.endpoint, hwm=hwm), pull
