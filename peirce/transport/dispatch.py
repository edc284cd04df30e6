"""Credit-based work dispatch over ZeroMQ ROUTER/DEALER: nothing lost, nothing doubled.

Why not PUSH/PULL for work? PUSH round-robins messages into peers' pipes ahead of
time; when a worker is removed, whatever sat in its pipe is gone. Here a worker asks
for exactly `n` items (credit) and returns each result on the same socket, so:

- the dispatcher knows which worker holds which item (`outstanding`);
- a draining worker simply stops asking and returns what it holds;
- a worker that dies (or says BYE with items unfinished) has its items re-queued at the
  front, exactly once; a late result for an item already completed elsewhere is
  dropped and counted (`duplicates`), so no item is ever delivered downstream twice.

Frames (all bytes, never pickle): worker -> dispatcher `[kind, *args]` with kind in
HELLO, CREDIT n, RESULT item_id *payload, PING credit_outstanding, BYE; dispatcher ->
worker `[b"ITEM", item_id, *payload]`. Payloads are opaque frame lists
(peirce.transport.wire). An idle worker PINGs every couple of seconds; a worker silent
for `worker_timeout_s` counts as dead (its items are re-queued) and, should it speak
again, its PING re-registers it with the credit it is still waiting on.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import zmq

HELLO, CREDIT, RESULT, PING, BYE, ITEM = b"HELLO", b"CREDIT", b"RESULT", b"PING", b"BYE", b"ITEM"


@dataclass
class WorkerState:
    credit: int = 0
    outstanding: dict[str, list[bytes]] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    leaving: bool = False


class WorkDispatcher:
    """Dispatcher side (binds). Single-threaded: call `pump()` from the owning loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, context: zmq.Context | None = None,
                 worker_timeout_s: float = 300.0) -> None:
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if port:
            self._sock.bind(f"tcp://{host}:{port}")
        else:
            self._sock.bind_to_random_port(f"tcp://{host}")
        self.endpoint: str = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.pending: collections.deque[tuple[str, list[bytes]]] = collections.deque()
        self.workers: dict[bytes, WorkerState] = {}
        self.completed: set[str] = set()
        self.duplicates = 0
        self.malformed = 0
        self.worker_timeout_s = worker_timeout_s

    # -- producer side -------------------------------------------------------------
    def submit(self, item_id: str, payload: list[bytes]) -> None:
        self.pending.append((item_id, payload))

    def in_flight(self) -> int:
        return len(self.pending) + sum(len(w.outstanding) for w in self.workers.values())

    def live_workers(self) -> int:
        return sum(1 for w in self.workers.values() if not w.leaving)

    # -- event loop ----------------------------------------------------------------
    def pump(self, timeout_ms: int = 10) -> list[tuple[str, list[bytes]]]:
        """Handle worker messages for up to `timeout_ms`, hand out work, return results."""
        results: list[tuple[str, list[bytes]]] = []
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining = max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(remaining, zmq.POLLIN):
                break
            while self._sock.poll(0, zmq.POLLIN):
                frames = self._sock.recv_multipart()
                self._handle(frames, results)
        self._expire_silent_workers()
        self._send_work()
        return results

    def _handle(self, frames: list[bytes], results: list) -> None:
        if len(frames) < 2:
            self.malformed += 1
            return
        ident, kind, args = frames[0], frames[1], frames[2:]
        known = ident in self.workers
        worker = self.workers.setdefault(ident, WorkerState())
        worker.last_seen = time.monotonic()
        if kind == HELLO:
            worker.leaving = False
        elif kind == PING:
            if not known and args:  # we had given it up for dead: take it back as it is
                try:
                    worker.credit = max(0, int(args[0]))
                except ValueError:
                    self.malformed += 1
        elif kind == CREDIT and args:
            try:
                worker.credit += max(0, int(args[0]))
            except ValueError:
                self.malformed += 1
        elif kind == RESULT and args:
            item_id = args[0].decode(errors="replace")
            worker.outstanding.pop(item_id, None)
            if item_id in self.completed:
                self.duplicates += 1
            else:
                self.completed.add(item_id)
                results.append((item_id, list(args[1:])))
        elif kind == BYE:
            self._retire(ident)
        else:
            self.malformed += 1

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
    """Worker side (connects). Ask for work, return results; `bye()` when draining is done."""

    def __init__(self, endpoint: str, context: zmq.Context | None = None, identity: str | None = None,
                 heartbeat_s: float = 2.0) -> None:
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 5000)  # results already sent must reach the dispatcher
        if identity:
            self._sock.setsockopt(zmq.IDENTITY, identity.encode())
        self._sock.connect(endpoint)
        self.heartbeat_s = heartbeat_s
        self.credit_out = 0  # requested, not yet received
        self.malformed = 0
        self._send([HELLO])

    def _send(self, frames: list, copy: bool = True) -> None:
        self._sock.send_multipart(frames, copy=copy)
        self._last_send = time.monotonic()

    def request(self, n: int) -> None:
        if n > 0:
            self.credit_out += n
            self._send([CREDIT, str(n).encode()])

    def receive(self, timeout_ms: int) -> list[tuple[str, list[bytes]]]:
        """Items received within `timeout_ms` (returns early once something arrived)."""
        items: list[tuple[str, list[bytes]]] = []
        if time.monotonic() - self._last_send >= self.heartbeat_s:
            self._send([PING, str(self.credit_out).encode()])
        if not self._sock.poll(timeout_ms, zmq.POLLIN):
            return items
        while self._sock.poll(0, zmq.POLLIN):
            frames = self._sock.recv_multipart(copy=False)
            if len(frames) < 2 or frames[0].bytes != ITEM:
                self.malformed += 1
                continue
            items.append((frames[1].bytes.decode(errors="replace"), [f.buffer for f in frames[2:]]))
        self.credit_out = max(0, self.credit_out - len(items))
        return items

    def result(self, item_id: str, payload: list) -> None:
        self._send([RESULT, item_id.encode(), *payload], copy=False)

    def bye(self) -> None:
        self._send([BYE])

    def close(self) -> None:
        self._sock.close()
