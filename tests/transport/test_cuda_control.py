"""The CUDA strategies' control plane as pure rules: op frames, NCCL ranks, groups, due peers."""

from __future__ import annotations

import base64
import pickle

import msgspec
import pytest

from peirce.transport.cuda_control import (OP_MARKER, DueBook, GroupPlan, OpDone, TransferOp, decode_op, encode_op,
                                           is_op, member_init_info, wire_update_info)
from peirce.transport.frames import FrameError, encode
from peirce.transport.sync_state import SubscriberBook
from peirce.transport.wire import Control, ControlKind


def test_ops_round_trip_and_are_told_apart_from_controls():
    op = TransferOp(seq=3, op="update", version=7, info={"names": ["a"], "shapes": [[2, 3]]})
    assert decode_op(encode_op(op)) == op
    assert decode_op(encode_op(OpDone(seq=3, ok=False, error="boom"))) == OpDone(seq=3, ok=False, error="boom")
    assert is_op(encode_op(op)) and not is_op(encode(Control(kind=ControlKind.READY, payload={"version": 1})))


@pytest.mark.parametrize("frames, reason", [
    ([OP_MARKER], "frames"),
    ([OP_MARKER, b"\xc1"], "invalid"),  # not msgpack
    ([OP_MARKER, msgspec.msgpack.encode({"type": "transfer_op", "seq": 1, "op": "explode", "version": 1})], "invalid"),
    ([OP_MARKER, msgspec.msgpack.encode({"type": "transfer_op", "seq": "1", "op": "start", "version": 1})], "invalid"),
    ([OP_MARKER, msgspec.msgpack.encode({"type": "op_done", "seq": 1, "ok": True, "extra": 1})], "invalid"),
])
def test_hostile_op_frames_raise_frame_errors(frames, reason):
    with pytest.raises(FrameError) as info:
        decode_op(frames)
    assert info.value.reason == reason


def test_each_member_gets_its_own_nccl_rank_and_ipc_info_passes_unchanged():
    nccl = {"master_address": "127.0.0.1", "master_port": 29500, "rank_offset": 1, "world_size": 4, "packed": True}
    assert [member_init_info(nccl, i)["rank_offset"] for i in range(3)] == [1, 2, 3]
    assert member_init_info(nccl, 0)["world_size"] == 4
    with pytest.raises(ValueError, match="rank 4 does not fit world_size 4"):
        member_init_info(nccl, 3)
    assert member_init_info({"packed": False}, 5) == {"packed": False}


def test_group_is_reformed_only_when_membership_changes():
    plan = GroupPlan()
    assert plan.needs_regroup([b"b", b"a"])
    plan.regroup([b"b", b"a"])
    assert plan.members == (b"a", b"b") and not plan.needs_regroup([b"a", b"b"])
    assert plan.needs_regroup([b"a", b"b", b"c"]) and plan.needs_regroup([b"a"])
    plan.broken()
    assert plan.needs_regroup([b"a", b"b"]) and plan.formed == 1


def test_publish_marks_registered_peers_due_and_a_late_joiner_waits_for_the_next_version():
    due = DueBook()
    book = SubscriberBook(due)
    book.on_control(b"a", "ready", -1)
    due.publishing = 1
    rnd = book.begin(1, now=0.0, timeout=5.0)
    assert due.take_due(1) == [b"a"] and rnd.pending == {b"a"}
    due.publishing = None
    # a late joiner between publishes: the weights of version 1 are gone, so it is deferred, not due
    book.on_control(b"b", "ready", -1)
    assert b"b" in book.peers and due.deferred == {b"b"} and due.take_due(1) == []
    book.on_control(b"a", "ack", 1)
    assert rnd.done and rnd.acked == ["a"]
    # the next publish sends it the newest version with everyone else
    due.publishing = 2
    rnd2 = book.begin(2, now=1.0, timeout=5.0)
    assert due.take_due(2) == [b"a", b"b"] and rnd2.pending == {b"a", b"b"} and not due.deferred


def test_unregistered_peers_are_told_rejoin_through_the_due_book():
    due = DueBook()
    book = SubscriberBook(due)
    assert not book.on_control(b"ghost", "ack", 3)
    assert due.rejoins == [b"ghost"]


def test_ipc_handles_travel_pickled_other_payloads_unchanged():
    nccl = {"names": ["w"], "dtype_names": ["bfloat16"], "shapes": [[2]]}
    assert wire_update_info(nccl) is nccl
    ipc = {**nccl, "ipc_handles": [{"GPU-uuid": ("args", 1, (2, 3))}]}
    out = wire_update_info(ipc)
    assert "ipc_handles" not in out and out["names"] == ["w"]
    assert pickle.loads(base64.b64decode(out["ipc_handles_pickled"])) == ipc["ipc_handles"]
    msgspec.msgpack.encode(TransferOp(seq=1, op="update", version=1, info=out))  # msgpack carries it
