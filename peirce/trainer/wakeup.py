"""The driver loop's one wait: until a worker message, the learner's return, or a timeout.

Why: the loop used to wait 5 ms on the rollout dispatcher, then 5 ms on the reward
dispatcher, and look at the learner's call once per pass, so a returned train call sat up
to ~10 ms before the next one went out (2.6% of an asynchronous step on the tiny model:
the learner's whole idle share). Here the learner's completion callback writes to a pipe
the loop's one wait polls, beside both dispatchers' sockets: the learner's return starts a
pass at once, worker messages at most one pass per `settle_ms` (reading every message in
its own pass cost the learner CPU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import zmq


class Wakeup:
    """A self-pipe: `set()` from any thread wakes a `wait` on this fd."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    def set(self) -> None:
        try:
            os.write(self._w, b"\0")
        except BlockingIOError:  # the pipe is full of wake-ups already: one is as good as many
            pass
        except OSError:  # closed at shutdown while a late callback ran
            pass

    def clear(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


def wait_any(sockets: Sequence[Any], wakeup: Wakeup, timeout_ms: int, settle_ms: int = 0) -> bool:
    """Block until `wakeup` was set, or (after the first `settle_ms`) one of `sockets` (zmq)
    has a message to read, or `timeout_ms` passed; True if something is ready. Clears
    `wakeup`. During `settle_ms` only the wake-up ends the wait: worker messages are read in
    batches, since a pass per message takes CPU the learner and the engines need (measured:
    the learner's step 8% slower in the balanced asynchronous benchmark)."""
    settle_ms = max(0, min(settle_ms, timeout_ms))
    if settle_ms and _poll([], wakeup, settle_ms):
        return True
    return _poll(sockets, wakeup, timeout_ms - settle_ms)


def _poll(sockets: Sequence[Any], wakeup: Wakeup, timeout_ms: int) -> bool:
    poller = zmq.Poller()
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    poller.register(wakeup.fileno(), zmq.POLLIN)
    ready = dict(poller.poll(timeout_ms))
    if wakeup.fileno() in ready:
        wakeup.clear()
    return bool(ready)
