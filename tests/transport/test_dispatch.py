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
    bad.send_multipart([b"HELLO"])  # registered, then misbehaves
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


def test_silent_worker_is_requeued_then_rejoins_with_hello():
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
    client.receive(10)  # its HEARTBEAT is refused and answered REJOIN: a heartbeat registers nobody
    d.pump(50)
    assert "rollout-7".encode() not in d.workers and d.rejected.as_dict() == {"unknown_peer": 1}
    assert client.receive(1000) == [] and client.rejoins >= 1  # says HELLO with the credit it is still owed
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


def _pump_until(d: WorkDispatcher, cond, timeout_s: float = 5.0) -> list:
    """Pump until `cond()` holds; the results delivered meanwhile."""
    out: list = []
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        out.extend(d.pump(10))
    return out


def _raw(endpoint: str, ctx: zmq.Context, identity: bytes) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def test_result_is_accepted_only_from_the_worker_holding_the_item():
    d = WorkDispatcher()
    ctx = zmq.Context()
    holder = WorkClient(d.endpoint, ctx, identity="holder")
    holder.request(1)
    d.submit("a", [b"1"])
    _pump_until(d, lambda: b"holder" in d.workers and d.workers[b"holder"].outstanding)
    other = _raw(d.endpoint, ctx, b"other")  # registered, holds nothing
    other.send_multipart([b"HELLO"])
    other.send_multipart([b"RESULT", b"a", b"forged"])
    stranger = _raw(d.endpoint, ctx, b"stranger")  # never said HELLO
    stranger.send_multipart([b"RESULT", b"a", b"forged"])
    early = _pump_until(d, lambda: d.rejected.total == 2)
    assert early == [] and d.rejected.as_dict() == {"not_holder": 1, "unknown_peer": 1}
    assert stranger.poll(2000) and stranger.recv_multipart() == [b"REJOIN"]
    assert b"stranger" not in d.workers
    [(item_id, _)] = holder.receive(2000)
    holder.result(item_id, [b"real"])
    assert _pump_until(d, lambda: "a" in d.completed) == [("a", [b"real"])]
    other.send_multipart([b"RESULT", b"a", b"late"])  # after completion: a duplicate, still dropped
    assert _pump_until(d, lambda: d.rejected.total == 3) == []
    assert d.rejected.as_dict()["duplicate"] == 1 and d.duplicates == 1 and d.in_flight() == 0
    for s in (other, stranger):
        s.close()
    holder._sock.setsockopt(zmq.LINGER, 0)
    holder.close()
    ctx.term()
    d.close()


def test_credit_requests_are_bounded():
    d = WorkDispatcher(max_credit=4)
    ctx = zmq.Context()
    w = _raw(d.endpoint, ctx, b"greedy")
    w.send_multipart([b"HELLO"])
    for bad in (b"-5", b"0", b"5", b"9" * 40):  # negative, zero, above max_credit, absurdly long
        w.send_multipart([b"CREDIT", bad])
    _pump_until(d, lambda: d.rejected.total == 4)
    assert d.rejected.as_dict() == {"credit": 4} and d.workers[b"greedy"].credit == 0
    w.send_multipart([b"CREDIT", b"3"])
    w.send_multipart([b"CREDIT", b"3"])  # 6 open > max_credit: capped at 4, counted
    _pump_until(d, lambda: d.rejected.total == 5)
    assert d.workers[b"greedy"].credit == 4
    for i in range(10):
        d.submit(f"t{i}", [b"x"])
    _pump_until(d, lambda: not d.workers[b"greedy"].credit)
    assert len(d.workers[b"greedy"].outstanding) == 4 and len(d.pending) == 6
    w.close()
    ctx.term()
    d.close()


def test_heartbeat_from_an_unknown_peer_registers_no_worker():
    d = WorkDispatcher()
    ctx = zmq.Context()
    for i in range(3):
        d.submit(f"t{i}", [b"x"])
    ghost = _raw(d.endpoint, ctx, b"ghost")
    ghost.send_multipart([b"HEARTBEAT", b"1000"])  # claims to be owed 1000 items
    _pump_until(d, lambda: d.rejected.total == 1)
    d.pump(50)
    assert d.workers == {} and len(d.pending) == 3
    assert d.rejected.as_dict() == {"unknown_peer": 1}
    assert ghost.poll(2000) and ghost.recv_multipart() == [b"REJOIN"]
    assert not ghost.poll(100)  # and no ITEM ever came
    ghost.close()
    ctx.term()
    d.close()
