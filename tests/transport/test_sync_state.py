"""The subscriber book's rules, driven by method calls and an explicit clock (no sockets).

The wire below is a recorder, not a fake of ZeroMQ: the book's only contract with the
transport is "send version V to peer P (it may fail)" and "tell P to REJOIN"; the
socket side of that contract is tested over real loopback in test_weight_sync.py.
"""

from __future__ import annotations

import pytest

from peirce.transport.sync_state import SubscriberBook, sid


class RecordingWire:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, int]] = []
        self.rejoins: list[bytes] = []
        self.unreachable: set[bytes] = set()

    def send_version(self, ident: bytes, version: int) -> bool:
        if ident in self.unreachable:
            return False
        self.sent.append((ident, version))
        return True

    def send_rejoin(self, ident: bytes) -> None:
        self.rejoins.append(ident)

    def take(self) -> list[tuple[bytes, int]]:
        out, self.sent = self.sent, []
        return out


@pytest.fixture
def wire() -> RecordingWire:
    return RecordingWire()


@pytest.fixture
def book(wire) -> SubscriberBook:
    return SubscriberBook(wire)


def test_late_joiner_gets_the_latest_version_at_once_and_current_one_gets_nothing(book, wire):
    book.begin(3, now=0.0, timeout=1.0)  # nobody registered: done at once
    assert book.active is None
    assert book.on_control(b"late", "ready", -1)
    assert book.on_control(b"current", "ready", 3)
    assert wire.take() == [(b"late", 3)]
    assert book.peers[b"late"].sending == 3 and book.peers[b"current"].version == 3


def test_round_waits_for_every_ack_of_its_version_and_ignores_stale_acks(book, wire):
    for p in (b"a", b"b"):
        book.on_control(p, "ready", -1)
    rnd = book.begin(1, now=0.0, timeout=10.0)
    assert wire.take() == [(b"a", 1), (b"b", 1)] and rnd.pending == {b"a", b"b"}
    book.on_control(b"a", "ack", 0)  # an older version's ACK does not count
    book.on_control(b"a", "heartbeat", 1)  # nor does a heartbeat
    assert not rnd.done
    book.on_control(b"a", "ack", 1)
    book.tick(5.0)
    assert not rnd.done and rnd.acked == ["a"]
    book.on_control(b"b", "ack", 1)
    assert rnd.done and rnd.acked == ["a", "b"] and rnd.evicted == [] and rnd.sent_to == ["a", "b"]
    assert book.active is None and wire.take() == []  # both are current: nothing resent


def test_versions_only_increase_and_rounds_do_not_overlap(book, wire):
    book.on_control(b"a", "ready", -1)
    book.begin(5, now=0.0, timeout=1.0)
    with pytest.raises(RuntimeError, match="round for version 5 still in progress"):
        book.begin(6, now=0.0, timeout=1.0)
    book.on_control(b"a", "ack", 5)
    with pytest.raises(ValueError, match="version: 5 must be greater than the last published 5"):
        book.begin(5, now=1.0, timeout=1.0)


def test_missed_ack_evicts_once_then_probation_costs_no_waiting(book, wire):
    """Issue 10 §2: a subscriber that never ACKs delays one publish, not every publish."""
    book.on_control(b"good", "ready", -1)
    book.on_control(b"lazy", "ready", -1)
    rnd1 = book.begin(1, now=0.0, timeout=1.0)
    book.on_control(b"good", "ack", 1)
    book.tick(0.5)
    assert not rnd1.done  # still waiting for lazy, within the timeout
    book.tick(1.0)
    assert rnd1.done and rnd1.evicted == ["lazy"] and b"lazy" not in book.peers
    # its next word is refused; READY brings it back on probation with the latest version
    assert not book.on_control(b"lazy", "heartbeat", 1)
    assert wire.rejoins == [b"lazy"] and b"lazy" not in book.peers
    wire.take()
    assert book.on_control(b"lazy", "ready", 1)
    assert not book.peers[b"lazy"].awaited and book.on_probation(b"lazy")
    for version in (2, 3, 4):  # every later round is sent to it, and none waits for it
        rnd = book.begin(version, now=float(version), timeout=1.0)
        book.on_control(b"good", "ack", version)
        assert rnd.done and rnd.not_awaited == ["lazy"] and rnd.evicted == []
        assert sorted(rnd.sent_to) == ["good", "lazy"]
    assert [v for p, v in wire.take() if p == b"lazy"] == [2, 3, 4]


def test_probation_ends_when_it_acks_what_it_was_last_sent(book, wire):
    book.on_control(b"lazy", "ready", -1)
    book.begin(1, now=0.0, timeout=1.0)
    book.tick(2.0)
    book.on_control(b"lazy", "ready", -1)  # back: sent 1 again, on probation
    book.begin(2, now=3.0, timeout=1.0)
    book.on_control(b"lazy", "ack", 1)  # an ACK of an older version than it was sent: still on probation
    assert not book.peers[b"lazy"].awaited
    book.on_control(b"lazy", "ack", 2)
    assert book.peers[b"lazy"].awaited and not book.on_probation(b"lazy")
    rnd = book.begin(3, now=4.0, timeout=1.0)
    assert rnd.pending == {b"lazy"} and rnd.not_awaited == []


def test_nack_gets_the_latest_version_resent(book, wire):
    book.on_control(b"a", "ready", -1)
    rnd = book.begin(1, now=0.0, timeout=10.0)
    assert wire.take() == [(b"a", 1)]
    book.on_control(b"a", "heartbeat", -1)  # still receiving version 1: not resent
    assert wire.take() == []
    book.on_control(b"a", "nack", -1)  # a corrupt bucket: it dropped what it had
    assert wire.take() == [(b"a", 1)] and rnd.sent_to == ["a", "a"] and not rnd.done
    book.on_control(b"a", "ack", 1)
    assert rnd.done


def test_bye_remove_and_unreachable_peers_stop_a_round_waiting(book, wire):
    for p in (b"bye", b"removed", b"gone", b"ok"):
        book.on_control(p, "ready", -1)
    wire.unreachable.add(b"gone")
    rnd = book.begin(1, now=0.0, timeout=60.0)
    assert b"gone" not in book.peers and rnd.pending == {b"bye", b"removed", b"ok"}
    book.on_control(b"bye", "bye", -1)
    book.remove("removed")
    assert rnd.evicted == ["bye", "removed"] and not rnd.done
    book.on_control(b"ok", "ack", 1)
    assert rnd.done and set(book.peers) == {b"ok"}
    assert not book.on_probation(b"bye")  # leaving is not missing an ACK: no probation if it returns
    book.on_control(b"stranger", "bye", -1)  # BYE from nobody is harmless
    assert wire.rejoins == []


def test_only_ready_registers_and_hostile_ids_print(book, wire):
    for kind in ("ack", "nack", "heartbeat", "stop"):
        assert not book.on_control(b"\xff\x00ghost", kind, 10**18)
    assert book.peers == {} and wire.rejoins == [b"\xff\x00ghost"] * 4
    assert sid(b"\xff\x00ghost") == "0xff0067686f7374" and sid(b"engine-1") == "engine-1"


def test_remembered_misses_are_bounded(wire):
    book = SubscriberBook(wire, max_remembered_misses=2)
    for p in (b"p0", b"p1", b"p2"):
        book.on_control(p, "ready", -1)
    book.begin(1, now=0.0, timeout=1.0)
    book.tick(1.0)
    assert book.peers == {}
    for p in (b"p0", b"p1", b"p2"):
        book.on_control(p, "ready", 1)
    # the oldest miss was forgotten: p0 is trusted again; p1 and p2 are on probation
    assert [book.peers[p].awaited for p in (b"p0", b"p1", b"p2")] == [True, False, False]


def test_finish_ends_a_round_that_still_waits(book, wire):
    book.on_control(b"a", "ready", -1)
    rnd = book.begin(1, now=0.0, timeout=60.0)
    assert book.finish() is rnd and rnd.done and rnd.pending == {b"a"} and book.active is None
    assert book.finish() is None
