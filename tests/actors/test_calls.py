"""ThreadCalls keeps what the driver relies on from a Ray actor: one call at a time per
actor, in call order; a method's error comes out of `get`; a killed actor refuses
further calls with ActorGone (which the pool classifies as a death)."""

from __future__ import annotations

import threading
import time

import pytest

from peirce.actors.calls import ActorGone, ThreadCalls
from peirce.trainer.worker_pool import DeathCause, classify_death


class Counter:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.gate = threading.Event()

    def slow(self, tag: str) -> str:
        self.gate.wait(5)
        self.log.append(tag)
        return tag

    def fast(self, tag: str) -> str:
        self.log.append(tag)
        return tag

    def fail(self) -> None:
        raise ValueError("boom")


def test_calls_of_one_actor_run_one_at_a_time_in_order():
    calls, a, b = ThreadCalls(), Counter(), Counter()
    first, second = calls.call(a, "slow", "1"), calls.call(a, "fast", "2")
    other = calls.call(b, "fast", "x")  # another actor is not held up by a's slow call
    assert calls.get(other, timeout=5) == "x" and not calls.done(first) and not calls.done(second)
    a.gate.set()
    assert (calls.get(first, timeout=5), calls.get(second, timeout=5)) == ("1", "2") and a.log == ["1", "2"]


def test_errors_come_out_of_get_and_a_killed_actor_refuses_calls():
    calls, a = ThreadCalls(), Counter()
    with pytest.raises(ValueError, match="boom"):
        calls.get(calls.call(a, "fail"), timeout=5)
    with pytest.raises(AttributeError):
        calls.call(a, "no_such_method")
    calls.kill(a)
    pending = calls.call(a, "fast", "late")
    assert calls.done(pending)
    with pytest.raises(ActorGone) as gone:
        calls.get(pending)
    assert classify_death(gone.value) is DeathCause.DIED and a.log == []


def test_get_times_out_on_a_call_still_running():
    calls, a = ThreadCalls(), Counter()
    pending = calls.call(a, "slow", "1")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        calls.get(pending, timeout=0.1)
    assert time.monotonic() - t0 < 2
    a.gate.set()
    assert calls.get(pending, timeout=5) == "1"
