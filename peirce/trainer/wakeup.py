"""Wake the driver loop the moment the learner returns.

Why: the loop waits up to 5 ms on the rollout dispatcher, then on the reward dispatcher,
and looked at the learner's call once per pass, so a returned train call sat up to ~10 ms
before the next went out (2.6% of an asynchronous step on the tiny model: the learner's
whole idle share where it is the bottleneck). The call's completion callback sets a
`Wakeup` (a self-pipe), which ends either dispatcher's wait (`WorkDispatcher.pump(wake=)`),
and the pass that sees the return sends the next batch (it waited for the next pass's waits).
Worker messages keep the loop's old pace on purpose: a pass per message (tried) sped the
synchronous run up 7% but took CPU the learner needed, slowing the asynchronous one 5%.
"""
from __future__ import annotations

import os


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
