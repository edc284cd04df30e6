"""The driver loop's single wait (peirce.trainer.wakeup): it returns for a worker message or
a wake-up set on another thread (the learner's completion callback), and only then."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import zmq

from peirce.actors.calls import ThreadCalls
from peirce.trainer.wakeup import Wakeup, wait_any


def _pair(ctx: zmq.Context, name: str) -> tuple[zmq.Socket, zmq.Socket]:
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind(f"inproc://{name}")
    b.connect(f"inproc://{name}")
    return a, b


def test_nothing_ready_is_a_timeout():
    ctx = zmq.Context.instance()
    a, b = _pair(ctx, "wakeup-idle")
    w = Wakeup()
    try:
        assert wait_any([a], w, 20) is False
    finally:
        w.close(), a.close(0), b.close(0)


def test_a_message_or_a_wakeup_from_another_thread_ends_the_wait():
    ctx = zmq.Context.instance()
    a, b = _pair(ctx, "wakeup-msg")
    w = Wakeup()
    try:
        b.send(b"x")
        assert wait_any([a], w, 10_000) is True and a.recv() == b"x"
        threading.Timer(0.05, w.set).start()
        assert wait_any([a], w, 10_000) is True  # False only after 10 s: the wake-up was missed
        assert wait_any([a], w, 20) is False  # cleared: it does not wake the next wait
        for _ in range(100_000):  # far more than the pipe holds: set() never blocks
            w.set()
        assert wait_any([a], w, 0) is True and wait_any([a], w, 0) is False
    finally:
        w.close(), a.close(0), b.close(0)
    w.set()  # a late callback after close does not raise


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


def test_messages_wait_for_the_settle_time_and_the_wakeup_does_not():
    ctx = zmq.Context.instance()
    a, b = _pair(ctx, "wakeup-settle")
    w = Wakeup()
    try:
        b.send(b"x")
        # a message is waiting, but for the first 10 s only a wake-up may end the wait
        threading.Timer(0.05, w.set).start()
        assert wait_any([a], w, 20_000, settle_ms=10_000) is True
        assert a.poll(0)  # it was the wake-up: the message is still unread
        assert wait_any([a], w, 1_000, settle_ms=1) is True and a.recv() == b"x"  # after the settle: the message
        assert wait_any([a], w, 30, settle_ms=500) is False  # settle capped by the timeout
    finally:
        w.close(), a.close(0), b.close(0)
