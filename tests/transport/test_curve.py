"""CURVE on the real sockets (loopback TCP): the run's peers are served, every other peer
is refused at the handshake and counted `unauthenticated`, and nothing it sends arrives."""

from __future__ import annotations

import time

import pytest
import torch
import zmq

from peirce.transport.dispatch import HELLO, WorkClient, WorkDispatcher
from peirce.transport.security import RunKeys, is_loopback
from peirce.transport.weight_sync import WeightPublisher, WeightSubscriber


@pytest.fixture(scope="module")
def keys() -> RunKeys:
    return RunKeys.generate()


def _pump(d: WorkDispatcher, until, timeout_s: float = 10.0) -> list:
    got, deadline = [], time.monotonic() + timeout_s
    while not until(got) and time.monotonic() < deadline:
        got.extend(d.pump(20))
    return got


def _intruder(endpoint: str, how: str, keys: RunKeys) -> zmq.Socket:
    """A DEALER that says HELLO without the run's keys: no CURVE, a wrong server key, or a
    wrong client key (it knows the server's public key but not the run's client pair)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    if how != "plain":
        public, secret = zmq.curve_keypair()
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = zmq.curve_keypair()[0] if how == "wrong server key" else keys.server_public
    sock.connect(endpoint)
    sock.send_multipart([HELLO, b"1"])
    return sock


def test_the_runs_workers_are_served_and_intruders_refused_and_counted(keys):
    d = WorkDispatcher("127.0.0.1", keys=keys)
    worker = WorkClient(d.endpoint, identity="w0", keys=keys.for_worker())
    intruders = [_intruder(d.endpoint, how, keys) for how in ("plain", "wrong server key", "wrong client key")]
    try:
        d.submit("item-1", [b"payload"])
        worker.request(1)
        received = []
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            d.pump(20)
            received = worker.receive(20)
        assert [(i, [bytes(f) for f in p]) for i, p in received] == [("item-1", [b"payload"])]
        worker.result("item-1", [b"done"])
        assert [(i, [bytes(f) for f in p]) for i, p in _pump(d, bool)] == [("item-1", [b"done"])]
        deadline = time.monotonic() + 10
        while d.rejected.as_dict().get("unauthenticated", 0) < 3 and time.monotonic() < deadline:
            d.pump(20)
        assert d.rejected.as_dict().get("unauthenticated", 0) >= 3, d.rejected.as_dict()
        assert d.live_workers() == 1  # none of the intruders' HELLOs registered
    finally:
        for s in intruders:
            s.close(0)
        worker.close()
        d.close()


def test_weights_reach_a_keyed_subscriber_and_not_a_keyless_one(keys):
    pub = WeightPublisher("tcp://127.0.0.1:*", keys=keys, ack_timeout=5.0)
    good = WeightSubscriber(pub.endpoint, name="good", keys=keys.for_worker())
    bad = WeightSubscriber(pub.endpoint, name="bad")
    try:
        deadline = time.monotonic() + 10
        while "good" not in pub.subscribers and time.monotonic() < deadline:
            good.receive(timeout=0.05)
        pub.publish({"w": torch.arange(6, dtype=torch.float32)}, version=1)
        got = None
        deadline = time.monotonic() + 10
        while got is None and time.monotonic() < deadline:
            got = good.receive(timeout=0.1)
        assert got is not None and got[0] == 1 and torch.equal(dict(got[1])["w"], torch.arange(6.0))
        assert bad.receive(timeout=0.5) is None and "bad" not in pub.subscribers
        assert pub.rejected_frames.get("unauthenticated", 0) >= 1
    finally:
        good.close()
        bad.close()
        pub.close()


def test_a_workers_copy_cannot_serve_and_keys_never_print_a_secret(keys):
    worker_keys = keys.for_worker()
    assert worker_keys.server_secret == b"" and worker_keys.client_secret == keys.client_secret
    with pytest.raises(ValueError, match="server secret"):
        WorkDispatcher("127.0.0.1", keys=worker_keys)
    text = repr(keys) + str(keys)
    assert keys.server_secret.decode() not in text and keys.client_secret.decode() not in text


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.0.0.3", True), ("localhost", True),
                                       ("10.0.0.5", False), ("::1", True)])
def test_loopback_addresses(host, loop):
    assert is_loopback(host) is loop


@pytest.mark.parametrize("host,auth,nodes,want", [
    ("127.0.0.1", "auto", [], False), ("10.1.2.3", "auto", [], True), ("127.0.0.1", "curve", [], True),
    ("10.1.2.3", "none", [], False), ("node", "auto", ["127.0.0.2", "127.0.0.3"], False),
    ("node", "auto", ["127.0.0.2", "10.0.0.7"], True)])
def test_keys_unless_every_endpoint_is_loopback(host, auth, nodes, want):
    from peirce.config.schema import TransportConfig
    from peirce.transport.network import needs_curve

    assert needs_curve(TransportConfig(host=host, auth=auth), nodes) is want
