"""The publisher's book of weight subscribers, as a state machine with no sockets.

Why apart from `weight_sync`: the rules (who is registered, which version each has,
whose ACK a publish waits for, who is evicted, who is on probation) are the part that
can be wrong in subtle ways, and they do not depend on how bytes move. Here they are
driven by plain method calls with an explicit clock, so every rule has a fast test
(tests/transport/test_sync_state.py); the ZeroMQ publisher only decodes frames, calls
these methods and moves bytes when told to (through the `Wire` it passes in).

Rules, in the order they apply:

1. Only READY registers. A non-READY message from an unregistered peer is answered
   REJOIN (`on_control` returns False so the caller can count it).
2. A peer whose known version is behind the latest published one is sent the latest
   at once: on READY (late joiners), on NACK (resend), on any later message.
3. `begin(version)` sends the version to every registered peer and waits for the ACK
   of each *awaited* one; `tick(now)` evicts those still pending at the deadline.
4. A peer evicted for a missed ACK comes back (READY after REJOIN) on probation: it is
   sent every version, but no round waits for it until it ACKs what it was last sent.
   So a subscriber that never ACKs costs one timeout once, not one per publish.
5. BYE, `remove`, or a failed send (peer gone, queue full) unregisters without waiting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

MAX_REMEMBERED_MISSES = 4096  # evicted-for-a-missed-ACK identities kept for probation


class Wire(Protocol):
    """What the book asks of the byte transport."""

    def send_version(self, ident: bytes, version: int) -> bool:
        """Queue every bucket of `version` (always the latest) to one peer; False if it cannot."""

    def send_rejoin(self, ident: bytes) -> None:
        """Tell an unregistered peer to send READY again (best effort)."""


def sid(ident: bytes) -> str:
    """Printable subscriber id: its chosen name, or hex for ZeroMQ's binary auto-ids."""
    try:
        return ident.decode()
    except UnicodeDecodeError:
        return "0x" + ident.hex()


@dataclass
class Peer:
    version: int = -1  # last version it reported (READY / ACK / HEARTBEAT)
    sending: int = -1  # last version queued to it and not since disowned (READY / NACK)
    awaited: bool = True  # rounds wait for its ACK; False on probation after a missed ACK


@dataclass
class Round:
    """One publish: who it was sent to, whose ACK it still waits for, and how it ended."""

    version: int
    deadline: float
    timeout: float
    pending: set[bytes] = field(default_factory=set)
    sent_to: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)  # timed out, gone, or full
    not_awaited: list[str] = field(default_factory=list)  # sent to, on probation
    done: bool = False


class SubscriberBook:
    """Registered peers, the latest version, and the round in progress (one at a time)."""

    def __init__(self, wire: Wire, *, max_remembered_misses: int = MAX_REMEMBERED_MISSES) -> None:
        self.wire = wire
        self.peers: dict[bytes, Peer] = {}
        self.latest: int | None = None
        self.active: Round | None = None
        self.max_remembered_misses = max_remembered_misses
        self._missed: dict[bytes, None] = {}  # evicted for a missed ACK (insertion-ordered, bounded)

    # -- publishing ------------------------------------------------------------------
    def begin(self, version: int, now: float, timeout: float) -> Round:
        """Start a round for `version`: send it to every peer; done at once if nobody is awaited."""
        if self.active is not None:
            raise RuntimeError(f"version {version}: round for version {self.active.version} still in progress")
        if self.latest is not None and version <= self.latest:
            raise ValueError(f"version: {version} must be greater than the last published {self.latest}")
        self.latest = version
        rnd = self.active = Round(version, deadline=now + timeout, timeout=timeout)
        for ident in list(self.peers):
            if self._send(ident, version):
                (rnd.pending.add(ident) if self.peers[ident].awaited else rnd.not_awaited.append(sid(ident)))
        self._maybe_finish()
        return rnd

    def tick(self, now: float) -> None:
        """Evict every peer whose ACK is still pending at the deadline; they go on probation."""
        rnd = self.active
        if rnd is None or now < rnd.deadline:
            return
        for ident in [i for i in self.peers if i in rnd.pending]:  # registration order: deterministic
            self.drop(ident, f"no ACK for version {rnd.version} within {rnd.timeout:.1f}s")
            self._missed[ident] = None
            if len(self._missed) > self.max_remembered_misses:
                del self._missed[next(iter(self._missed))]
        self._maybe_finish()

    def finish(self) -> Round | None:
        """End the active round whatever is pending (the publisher is shutting down)."""
        rnd, self.active = self.active, None
        if rnd is not None:
            rnd.done = True
        return rnd

    # -- peers -------------------------------------------------------------------------
    def on_control(self, ident: bytes, kind: str, version: int) -> bool:
        """Apply one control message (`ControlKind` value); False if from an unregistered peer."""
        if kind == "bye":
            self.drop(ident, "bye")
            return True
        peer = self.peers.get(ident)
        if peer is None:
            if kind != "ready":
                self.wire.send_rejoin(ident)
                return False
            peer = self.peers[ident] = Peer(awaited=ident not in self._missed)
            log.info("subscriber %s registered at version %d%s", sid(ident), version,
                     "" if peer.awaited else " (on probation: missed an ACK before)")
        peer.version = version if kind == "ready" else max(peer.version, version)
        if kind in ("ready", "nack"):
            peer.sending = -1  # it has nothing in flight that it will keep
        if kind == "ack":
            self._on_ack(ident, peer, version)
        if self.latest is not None and self.latest > max(peer.version, peer.sending):
            self._send(ident, self.latest)
        return True

    def _on_ack(self, ident: bytes, peer: Peer, version: int) -> None:
        if not peer.awaited and version >= peer.sending:
            peer.awaited = True  # ACKs again: rounds wait for it again
            self._missed.pop(ident, None)
        rnd = self.active
        if rnd is not None and version >= rnd.version and ident in rnd.pending:
            rnd.pending.discard(ident)
            rnd.acked.append(sid(ident))
            self._maybe_finish()

    def remove(self, subscriber_id: str) -> None:
        for ident in [i for i in self.peers if sid(i) == subscriber_id]:
            self.drop(ident, "removed")

    def drop(self, ident: bytes, why: str) -> None:
        """Unregister a peer; a round waiting for it counts it evicted and stops waiting."""
        if self.peers.pop(ident, None) is None:
            return
        level = logging.INFO if why in ("bye", "removed") else logging.WARNING
        log.log(level, "subscriber %s unregistered: %s", sid(ident), why)
        rnd = self.active
        if rnd is not None and ident in rnd.pending:
            rnd.pending.discard(ident)
            rnd.evicted.append(sid(ident))
            self._maybe_finish()

    def on_probation(self, ident: bytes) -> bool:
        return ident in self._missed

    # -- internals ---------------------------------------------------------------------
    def _send(self, ident: bytes, version: int) -> bool:
        if not self.wire.send_version(ident, version):
            self.drop(ident, f"send of version {version} failed")
            return False
        self.peers[ident].sending = version
        rnd = self.active
        if rnd is not None and rnd.version == version:
            rnd.sent_to.append(sid(ident))
        return True

    def _maybe_finish(self) -> None:
        rnd = self.active
        if rnd is not None and not rnd.pending:
            self.finish()
