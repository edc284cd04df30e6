"""Credit-based work dispatch over ZeroMQ ROUTER/DEALER: nothing lost, nothing doubled.

Why not PUSH/PULL for work? PUSH round-robins messages into peers' pipes ahead of
time; when a worker is removed, whatever sat in its pipe is gone. Here a worker asks
for exactly `n` items (credit) and returns each result on the same socket, so:

- the dispatcher knows which worker holds which item (`outstanding`), and accepts a
  result only from the worker holding that item;
- a draining worker simply stops asking and returns what it holds;
- a worker that dies (or says BYE with items unfinished) has its items re-queued at the
  front, exactly once; a result from anyone else (a worker given up for dead, a late
  duplicate, a stray peer) is dropped and counted, so no item is ever delivered
  downstream twice.

Frames (all bytes, never pickle): worker -> dispatcher `[kind, *args]` with kind in
HELLO [credit], CREDIT n, RESULT item_id *payload, HEARTBEAT credit_outstanding, BYE;
dispatcher -> worker `[b"ITEM", item_id, *payload]` or `[b"REJOIN"]`. Payloads are
opaque frame lists (peirce.transport.wire). Only HELLO registers a worker. An idle
worker sends a HEARTBEAT every `heartbeat_s` (the name the weight-sync channel uses too);
a worker silent for `worker_timeout_s` counts as dead (its items are re-queued). Whatever
an unregistered peer sends is refused and answered REJOIN, on which `WorkClient` says
HELLO again with the credit it still waits on. A CREDIT request must be in [1, max_credit] and a worker's open credit is capped at
`max_credit`, so one peer cannot claim the whole queue. Every refusal is counted by
reason in `rejected` (a RejectCounter: hook it to `peirce_rejected_frames_total`) and
logged: malformed | credit | unknown_peer | not_holder | duplicate.

Endpoints: tcp on loopback by default; `inproc_endpoint()` gives ZeroMQ's in-process
transport instead (same sockets, same frames, no TCP), which fast tests use to run the
real worker loops on threads against a real dispatcher. Both ends must then share one
zmq.Context (both default to `zmq.Context.instance()`).
"""

from __future__ import annotations

import collections
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import zmq

from peirce.transport import security
from peirce.transport.frames import FrameError, RejectCounter
from peirce.transport.security import RunKeys

HELLO, CREDIT, RESULT, HEARTBEAT, BYE, ITEM = b"HELLO", b"CREDIT", b"RESULT", b"HEARTBEAT", b"BYE", b"ITEM"
REJOIN = b"REJOIN"
DEFAULT_MAX_CREDIT = 4096  # items one worker may ask for and not yet have received
_MAX_COUNT_DIGITS = 20  # a count frame longer than this is refused before int() reads it


def inproc_endpoint(name: str) -> str:
    """A fresh `inproc://` address (unique per call, so two dispatchers never collide)."""
    return f"inproc://peirce-{name}-{uuid.uuid4().hex[:12]}"


def parse_count(arg: bytes, max_value: int, what: str) -> int:
    """A decimal count in [1, max_value] from one frame; FrameError naming the value otherwise."""
    if len(arg) > _MAX_COUNT_DIGITS:
        raise FrameError("credit", f"{what}: {len(arg)}-byte count, at most {_MAX_COUNT_DIGITS} digits")
    try:
        n = int(arg)
    except ValueError:
        raise FrameError("malformed", f"{what}: {arg[:24]!r} is not a decimal count") from None
    if not 1 <= n <= max_value:
        raise FrameError("credit", f"{what}: {n} not in [1, max_credit={max_value}]")
    return n


@dataclass
class WorkerState:
    credit: int = 0
    outstanding: dict[str, list[bytes]] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    leaving: bool = False


class WorkDispatcher:
    """Dispatcher side (binds). Single-threaded: call `pump()` from the owning loop.

    Binds `tcp://host:port` (port 0: any free one), or exactly `endpoint` when given."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, context: zmq.Context | None = None,
                 worker_timeout_s: float = 300.0, max_credit: int = DEFAULT_MAX_CREDIT,
                 rejected: RejectCounter | None = None, endpoint: str | None = None,
                 keys: RunKeys | None = None) -> None:
        if max_credit < 1:
            raise ValueError(f"max_credit: must be >= 1, got {max_credit}")
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.rejected = rejected or RejectCounter()
        security.serve(self._sock, keys, self.rejected)  # CURVE when the run spans nodes
        if endpoint is not None:
            self._sock.bind(endpoint)
        elif port:
            self._sock.bind(f"tcp://{host}:{port}")
        else:
            self._sock.bind_to_random_port(f"tcp://{host}")
        self.endpoint: str = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.pending: collections.deque[tuple[str, list[bytes]]] = collections.deque()
        self.workers: dict[bytes, WorkerState] = {}
        self.completed: set[str] = set()
        self.duplicates = 0
        self.worker_timeout_s = worker_timeout_s
        self.max_credit = max_credit

    @property
    def malformed(self) -> int:
        return self.rejected.as_dict().get("malformed", 0)

    # -- producer side -------------------------------------------------------------
    def submit(self, item_id: str, payload: list[bytes]) -> None:
        self.pending.append((item_id, payload))

    def in_flight(self) -> int:
        return len(self.pending) + sum(len(w.outstanding) for w in self.workers.values())

    def holding(self) -> list[bool]:
        """Per registered worker: whether it holds an item now (the driver's idle clock)."""
        return [bool(w.outstanding) for w in self.workers.values()]

    def live_workers(self) -> int:
        return sum(1 for w in self.workers.values() if not w.leaving)

    # -- event loop ----------------------------------------------------------------
    def pump(self, timeout_ms: int = 10, wake: Any = None) -> list[tuple[str, list[bytes]]]:
        """Handle worker messages for up to `timeout_ms`, hand out work, return results.
        `wake` (anything with `fileno()`, e.g. peirce.trainer.wakeup.Wakeup): the wait also
        ends as soon as it is readable (it is not consumed here)."""
        results: list[tuple[str, list[bytes]]] = []
        deadline = time.monotonic() + timeout_ms / 1000
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if wake is not None:
            poller.register(wake.fileno(), zmq.POLLIN)
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            ready = dict(poller.poll(remaining))
            if not ready:
                break
            while self._sock.poll(0, zmq.POLLIN):
                frames = self._sock.recv_multipart()
                try:
                    self._handle(frames, results)
                except FrameError as err:
                    self.rejected.record(err, f"dispatcher {self.endpoint} from {frames[0]!r:.40}")
            if wake is not None and wake.fileno() in ready:
                break
        self._expire_silent_workers()
        self._send_work()
        return results

    def _handle(self, frames: list[bytes], results: list) -> None:
        """Apply one worker message; FrameError for anything refused (the caller counts it)."""
        if len(frames) < 2:
            raise FrameError("malformed", f"{len(frames)} frames, need at least [identity, kind]")
        ident, kind, args = frames[0], frames[1], frames[2:]
        if kind not in (HELLO, CREDIT, RESULT, HEARTBEAT, BYE) or (kind in (CREDIT, RESULT) and not args):
            raise FrameError("malformed", f"{kind[:16]!r} with {len(args)} args is not a worker message")
        worker = self.workers.get(ident)
        if kind == HELLO:
            self._hello(ident, worker, args)
            return
        if worker is None:
            if kind != BYE:  # a BYE from a worker we already let go needs nothing
                self._send_rejoin(ident)
                raise FrameError("unknown_peer", f"{kind.decode()} from a peer that has not said HELLO; told REJOIN")
            return
        worker.last_seen = time.monotonic()
        if kind == CREDIT:
            self._credit(worker, parse_count(args[0], self.max_credit, "CREDIT"))
        elif kind == RESULT:
            self._result(worker, args[0].decode(errors="replace"), args[1:], results)
        elif kind == BYE:
            self._retire(ident)

    def _hello(self, ident: bytes, worker: WorkerState | None, args: list[bytes]) -> None:
        if worker is not None:  # a repeated HELLO changes nothing but a drain flag
            worker.leaving = False
            worker.last_seen = time.monotonic()
            return
        self.workers[ident] = worker = WorkerState()
        if args and args[0] != b"0":  # re-registering after REJOIN: the credit it still waits on
            self._credit(worker, parse_count(args[0], self.max_credit, "HELLO credit"))

    def _credit(self, worker: WorkerState, n: int) -> None:
        if worker.credit + n > self.max_credit:
            worker.credit = self.max_credit
            raise FrameError("credit", f"open credit capped at max_credit={self.max_credit}")
        worker.credit += n

    def _result(self, worker: WorkerState, item_id: str, payload: list[bytes], results: list) -> None:
        held = worker.outstanding.pop(item_id, None) is not None
        if item_id in self.completed:
            self.duplicates += 1
            raise FrameError("duplicate", f"RESULT for {item_id!r:.80}, already completed")
        if not held:
            raise FrameError("not_holder", f"RESULT for {item_id!r:.80} from a worker that does not hold it")
        self.completed.add(item_id)
        results.append((item_id, list(payload)))

    def _send_rejoin(self, ident: bytes) -> None:
        try:
            self._sock.send_multipart([ident, REJOIN], flags=zmq.NOBLOCK)
        except zmq.ZMQError:  # gone already (ROUTER_MANDATORY) or full: it will ask again
            pass

    def retire(self, worker_id: str) -> None:
        """The pool saw this worker die: re-queue what it held now, not after a timeout."""
        self._retire(worker_id.encode())

    def _retire(self, ident: bytes) -> None:
        """Re-queue what a departing/dead worker still holds, at the front, in order."""
        worker = self.workers.pop(ident, None)
        if worker is None:
            return
        for item_id, payload in reversed(list(worker.outstanding.items())):
            if item_id not in self.completed:
                self.pending.appendleft((item_id, payload))

    def _expire_silent_workers(self) -> None:
        now = time.monotonic()
        for ident in [i for i, w in self.workers.items() if now - w.last_seen > self.worker_timeout_s]:
            self._retire(ident)

    def _send_work(self) -> None:
        for ident, worker in list(self.workers.items()):
            while worker.credit > 0 and self.pending and not worker.leaving:
                item_id, payload = self.pending.popleft()
                try:
                    self._sock.send_multipart([ident, ITEM, item_id.encode(), *payload], copy=False)
                except zmq.ZMQError:  # peer vanished (ROUTER_MANDATORY): requeue and forget it
                    self.pending.appendleft((item_id, payload))
                    self._retire(ident)
                    break
                worker.credit -= 1
                worker.outstanding[item_id] = payload

    def close(self) -> None:
        self._sock.close(0)


class WorkClient:
    """Worker side (connects). Ask for work, return results; `bye()` when draining is done.

    Frames the dispatcher sends that are not ITEM or REJOIN are counted in `rejected`."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None, identity: str | None = None,
                 heartbeat_s: float = 2.0, rejected: RejectCounter | None = None,
                 keys: RunKeys | None = None) -> None:
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 5000)  # results already sent must reach the dispatcher
        if identity:
            self._sock.setsockopt(zmq.IDENTITY, identity.encode())
        security.connect(self._sock, keys)
        self._sock.connect(endpoint)
        self.heartbeat_s = heartbeat_s
        self.credit_out = 0  # requested, not yet received
        self.rejected = rejected or RejectCounter()
        self.rejoins = 0
        self._send([HELLO])

    @property
    def malformed(self) -> int:
        return self.rejected.as_dict().get("malformed", 0)

    def _send(self, frames: list, copy: bool = True) -> None:
        self._sock.send_multipart(frames, copy=copy)
        self._last_send = time.monotonic()

    def request(self, n: int) -> None:
        if n > 0:
            self.credit_out += n
            self._send([CREDIT, str(n).encode()])

    def receive(self, timeout_ms: int) -> list[tuple[str, list[bytes]]]:
        """Items received within `timeout_ms` (returns early once an item arrived)."""
        items: list[tuple[str, list[bytes]]] = []
        if time.monotonic() - self._last_send >= self.heartbeat_s:
            self._send([HEARTBEAT, str(self.credit_out).encode()])
        deadline = time.monotonic() + timeout_ms / 1000
        while not items:
            if not self._sock.poll(max(0, int((deadline - time.monotonic()) * 1000)), zmq.POLLIN):
                break
            while self._sock.poll(0, zmq.POLLIN):
                self._on_frames(self._sock.recv_multipart(copy=False), items)
        self.credit_out = max(0, self.credit_out - len(items))
        return items

    def _on_frames(self, frames: list, items: list) -> None:
        head = frames[0].bytes
        if head == REJOIN and len(frames) == 1:  # the dispatcher gave us up for dead: register again
            self.rejoins += 1
            self._send([HELLO, str(max(0, self.credit_out - len(items))).encode()])
        elif head == ITEM and len(frames) >= 2:
            items.append((frames[1].bytes.decode(errors="replace"), [f.buffer for f in frames[2:]]))
        else:
            self.rejected.record(FrameError("malformed", f"dispatcher sent {head[:16]!r} ({len(frames)} frames)"))

    def result(self, item_id: str, payload: list) -> None:
        self._send([RESULT, item_id.encode(), *payload], copy=False)

    def bye(self) -> None:
        self._send([BYE])

    def close(self) -> None:
        self._sock.close()
