"""Credit-based dispatch on real ZeroMQ loopback sockets: every item done exactly once
while workers join, drain, and die mid-item."""

from __future__ import annotations

import threading
import time

import zmq

from peirce.transport.dispatch import WorkClient, WorkDispatcher


def _worker(endpoint: str, stop_after: int | None, die: bool, done: list, credit: int = 2) -> None:
    ctx = zmq.Context()
    client = WorkClient(endpoint, ctx)
    handled = 0
    client.request(credit)
    idle = 0
    while idle < 50:
        items = client.receive(20)
        if not items:
            idle += 1
            continue
        idle = 0
        for item_id, payload in items:
            if stop_after is not None and handled >= stop_after:
                if die:  # vanish holding this item: no result, no BYE
                    client._sock.setsockopt(zmq.LINGER, 0)
                    client.close()
                    ctx.term()
                    return
                break
            client.result(item_id, [bytes(payload[0]) + b"!"])
            done.append(item_id)
            handled += 1
            client.request(1)
        else:
            continue
        break
    client.bye()  # drain: whatever we still hold goes back to the dispatcher
    client.close()
    ctx.term()


def _run(dispatcher: WorkDispatcher, n: int, timeout_s: float = 30) -> dict[str, bytes]:
    results: dict[str, bytes] = {}
    deadline = time.monotonic() + timeout_s
    while len(results) < n and time.monotonic() < deadline:
        for item_id, payload in dispatcher.pump(20):
            assert item_id not in results, f"{item_id} delivered twice"
            results[item_id] = payload[0]
    return results


def test_all_items_done_once_with_draining_and_dying_workers():
    d = WorkDispatcher(worker_timeout_s=0.5)
    n = 60
    for i in range(n):
        d.submit(f"t{i}", [f"p{i}".encode()])
    done: list[str] = []
    threads = [
        threading.Thread(target=_worker, args=(d.endpoint, None, False, done)),
        threading.Thread(target=_worker, args=(d.endpoint, 5, False, done)),  # drains after 5
        threading.Thread(target=_worker, args=(d.endpoint, 3, True, done)),  # dies holding items
    ]
    for t in threads:
        t.start()
    late = threading.Thread(target=_worker, args=(d.endpoint, None, False, done))
    time.sleep(0.2)
    late.start()  # scaled up mid-run
    results = _run(d, n)
    for t in [*threads, late]:
        t.join(timeout=10)
    assert sorted(results) == sorted(f"t{i}" for i in range(n))
    assert all(results[f"t{i}"] == f"p{i}!".encode() for i in range(n))
    assert d.in_flight() == 0
    d.close()


def test_malformed_worker_messages_are_counted_not_fatal():
    d = WorkDispatcher()
    ctx = zmq.Context()
    bad = ctx.socket(zmq.DEALER)
    bad.connect(d.endpoint)
    bad.send_multipart([b"NONSENSE", b"x"])
    bad.send_multipart([b"CREDIT", b"not-a-number"])
    d.submit("a", [b"1"])
    done: list[str] = []
    t = threading.Thread(target=_worker, args=(d.endpoint, None, False, done))
    t.start()
    results = _run(d, 1)
    t.join(timeout=10)
    assert results == {"a": b"1!"}
    assert d.malformed == 2
    bad.close(0)
    ctx.term()
    d.close()


def test_silent_worker_is_requeued_then_reregistered_by_ping():
    d = WorkDispatcher(worker_timeout_s=0.3)
    ctx = zmq.Context()
    client = WorkClient(d.endpoint, ctx, identity="rollout-7", heartbeat_s=0.05)
    client.request(1)
    d.submit("a", [b"1"])
    d.pump(50)  # hands "a" to the worker
    got = client.receive(1000)
    assert [i for i, _ in got] == ["a"]
    client.request(1)
    d.pump(20)
    time.sleep(0.5)  # silent past the timeout while holding "a": presumed dead
    d.pump(10)
    assert "rollout-7".encode() not in d.workers and [i for i, _ in d.pending] == ["a"]
    client.receive(10)  # its heartbeat: back, still owed one item
    d.pump(50)
    again = client.receive(1000)
    assert [i for i, _ in again] == ["a"]  # re-delivered once: the first copy was never returned
    client.result("a", [b"done"])
    results = _run(d, 1, timeout_s=5)
    assert results == {"a": b"done"}
    d.retire("rollout-7")
    assert d.in_flight() == 0
    client.close()
    ctx.term()
    d.close()
