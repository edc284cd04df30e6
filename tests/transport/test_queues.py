"""Channels: real ZeroMQ PUSH/PULL on loopback and the in-process twin, same rules."""

from __future__ import annotations

import threading

import msgspec
import numpy as np
import pytest
import zmq

from peirce.transport.frames import encode
from peirce.transport.queues import LocalChannel, ZmqPullChannel, ZmqPushChannel, zmq_channel_pair
from peirce.transport.wire import SCHEMA_VERSION, Control, ControlKind

from transport_helpers import assert_same_msg, make_rollout


@pytest.fixture(params=["zmq-tcp", "zmq-ipc", "local"])
def pair(request, tmp_path):
    if request.param == "local":
        ch = LocalChannel(hwm=8)
        yield ch, ch
        ch.close()
        return
    endpoint = "tcp://127.0.0.1:*" if request.param == "zmq-tcp" else f"ipc://{tmp_path}/q.sock"
    push, pull = zmq_channel_pair(endpoint, hwm=8)
    yield push, pull
    push.close()
    pull.close()


def test_round_trip_in_order(pair):
    tx, rx = pair
    sent = [make_rollout(i) for i in range(5)] + [Control(kind=ControlKind.STOP)]
    for m in sent:
        assert tx.send(m, timeout=5)
    got = [rx.recv(timeout=5) for _ in sent]
    for a, b in zip(got, sent):
        assert_same_msg(a, b)
    assert rx.recv(timeout=0.05) is None


def test_bind_on_loopback_random_port():
    with ZmqPullChannel() as pull:
        assert pull.endpoint.startswith("tcp://127.0.0.1:")
        assert int(pull.endpoint.rsplit(":", 1)[1]) > 0


def test_malformed_frames_counted_and_receiver_keeps_serving():
    pull = ZmqPullChannel(max_frame_bytes=1 << 16)
    raw = zmq.Context.instance().socket(zmq.PUSH)
    raw.connect(pull.endpoint)
    good = encode(make_rollout(1))
    header = msgspec.msgpack.decode(good[0])
    bad = [
        [good[0][: len(good[0]) // 2], *good[1:]],  # truncated
        [b"\xc1garbage\xff"],  # garbage bytes
        [msgspec.msgpack.encode({**header, "schema": SCHEMA_VERSION + 1}), *good[1:]],  # wrong schema
        [good[0], np.zeros(1 << 15, np.int32), *good[2:]],  # oversized frame
        [msgspec.msgpack.encode({**header, "prompt_token_ids": {"$oob": 1, "dtype": "int32", "len": 99}}),
         *good[1:]],  # wrong declared length
    ]
    for frames in bad:
        raw.send_multipart(frames, copy=False)
    raw.send_multipart(good, copy=False)
    msg = pull.recv(timeout=5)
    assert_same_msg(msg, make_rollout(1))
    assert pull.rejected_frames == {"malformed": 2, "schema": 1, "oversized": 1, "size": 1}
    assert pull.recv(timeout=0.05) is None
    raw.close()
    pull.close()


def test_reject_hook_sees_each_reason():
    seen = []
    pull = ZmqPullChannel()
    pull.rejected.hooks.append(lambda reason, detail: seen.append(reason))
    pull.rejected.hooks.insert(0, lambda *a: 1 / 0)  # a broken hook must not break the receiver
    with ZmqPushChannel(pull.endpoint) as push:
        push.send_frames([b"junk"], timeout=5)
        push.send(Control(kind=ControlKind.ACK), timeout=5)
        assert pull.recv(timeout=5).kind is ControlKind.ACK
    assert seen == ["malformed"]
    pull.close()


def test_backpressure_on_full_hwm_never_drops():
    push, pull = zmq_channel_pair(hwm=2)
    accepted = 0
    while push.send(make_rollout(accepted, n_prompt=1 << 16), timeout=0.2):  # 256 KiB each
        accepted += 1
        assert accepted < 500, "HWM never pushed back"
    assert accepted >= 2
    got = [pull.recv(timeout=5) for _ in range(accepted)]
    assert [m.sample_index for m in got] == list(range(accepted))
    assert push.send(make_rollout(accepted), timeout=5)  # room again
    assert pull.recv(timeout=5).sample_index == accepted
    push.close()
    pull.close()


def test_push_without_listener_reports_false(tmp_path):
    with ZmqPushChannel(f"ipc://{tmp_path}/nobody.sock") as push:
        assert push.send(Control(kind=ControlKind.STOP), timeout=0.1) is False


def test_local_channel_backpressure_and_blocking_send():
    ch = LocalChannel(hwm=2)
    assert ch.send(make_rollout(0), timeout=0) and ch.send(make_rollout(1), timeout=0)
    assert ch.send(make_rollout(2), timeout=0) is False
    assert ch.send(make_rollout(2), timeout=0.05) is False
    t = threading.Timer(0.1, ch.recv)
    t.start()
    assert ch.send(make_rollout(2), timeout=5)  # unblocked by the consumer
    t.join()
    assert [ch.recv(timeout=1).sample_index for _ in range(2)] == [1, 2]
    assert ch.recv(timeout=0) is None
    with pytest.raises(ValueError, match="hwm: must be > 0, got 0"):
        LocalChannel(hwm=0)
