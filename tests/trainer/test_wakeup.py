"""The driver's wake-up (peirce.trainer.wakeup) and the dispatcher wait it ends: a wake-up set
on another thread (the learner's completion callback) ends `WorkDispatcher.pump` at once,
without being consumed; messages are still handled as before."""

from __future__ import annotations

import threading
from concurrent.futures import Future

from peirce.actors.calls import ThreadCalls
from peirce.trainer.wakeup import Wakeup
from peirce.transport.dispatch import WorkClient, WorkDispatcher


def test_a_wakeup_from_another_thread_ends_the_dispatchers_wait():
    d, w = WorkDispatcher(), Wakeup()
    try:
        timer = threading.Timer(0.05, w.set)
        timer.start()
        assert d.pump(60_000, wake=w) == []  # returns at the wake-up; without it, after a minute
        assert d.pump(0, wake=w) == []  # not consumed: still set
        w.clear()
        for _ in range(100_000):  # far more than the pipe holds: set() never blocks
            w.set()
        w.clear()
    finally:
        d.close()
        w.close()
    w.set()  # a late callback after close does not raise


def test_messages_are_handled_with_a_wakeup_given():
    d, w = WorkDispatcher(), Wakeup()
    client = WorkClient(d.endpoint, identity="worker-a")
    try:
        client.request(1)
        d.submit("item", [b"payload"])
        got = []
        for _ in range(200):
            d.pump(10, wake=w)
            got = client.receive(10)
            if got:
                break
        assert [item_id for item_id, _ in got] == ["item"]
        client.result("item", [b"done"])
        results = []
        for _ in range(200):
            results += d.pump(10, wake=w)
            if results:
                break
        assert results == [("item", [b"done"])]
    finally:
        client.close()
        d.close()
        w.close()


def test_calls_report_the_end_of_a_call_however_it_ended():
    calls = ThreadCalls()

    class Actor:
        def ok(self) -> int:
            return 1

        def fails(self) -> int:
            raise ValueError("boom")

    actor, ended = Actor(), []
    for method in ("ok", "fails"):
        done = threading.Event()
        pending = calls.call(actor, method)
        calls.when_done(pending, lambda m=method: (ended.append(m), done.set()))
        assert done.wait(10)
    finished: Future = Future()
    finished.set_result(None)
    calls.when_done(finished, lambda: ended.append("already"))  # an ended call reports at once
    assert ended == ["ok", "fails", "already"]
