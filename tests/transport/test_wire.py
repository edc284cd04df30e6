"""Every message kind round-trips; every kind of malformed frame list is rejected with a reason."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from peirce.transport.frames import FrameError, decode, encode
from peirce.transport.wire import (
    SCHEMA_VERSION, Control, ControlKind, RequestSampling, RolloutSample, ScoredSample, TaskMsg, TensorSpec,
    WeightBucketHeader, WeightBucketMsg,
)

from transport_helpers import assert_same_msg, make_rollout, make_task


def _header(nbytes=16):
    return WeightBucketHeader(version=2, bucket_index=0, n_buckets=1, checksum=123, checksum_algo="xxh3_64",
                              tensors=[TensorSpec("w", "bfloat16", (2, 4), 0, 16)], nbytes=nbytes)


ALL = {
    "task": lambda: TaskMsg(task=make_task(1), group_id="g1", n_samples=8, attempt=1,
                            sampling=RequestSampling(temperature=1.0, max_tokens=64), phase="meta",
                            policy_version_at_dispatch=5),
    "rollout": lambda: make_rollout(2),
    "rollout_empty": lambda: make_rollout(3, n_prompt=0, n_resp=0),
    "scored": lambda: ScoredSample(sample=make_rollout(4), reward=1.0, correct=True, format_ok=True,
                                   reward_details={"parse": "ok", "score": 1.0}),
    "bucket_header": _header,
    "bucket": lambda: WeightBucketMsg(header=_header(), data=np.arange(16, dtype=np.uint8)),
    "control": lambda: Control(kind=ControlKind.READY, payload={"version": 3}),
}


@pytest.mark.parametrize("kind", sorted(ALL))
def test_round_trip(kind):
    msg = ALL[kind]()
    frames = encode(msg)
    assert isinstance(frames[0], bytes)
    back = decode([bytes(memoryview(f).cast("B")) for f in frames])
    assert type(back) is type(msg)
    assert back.schema == SCHEMA_VERSION
    assert_same_msg(back, msg)


def test_arrays_travel_out_of_band_and_decode_zero_copy():
    msg = make_rollout(0, n_prompt=1000, n_resp=500)
    frames = encode(msg)
    assert len(frames) == 4 and len(frames[0]) < 600  # header stays small
    assert frames[1].nbytes == 4000 and frames[3].nbytes == 2000
    buf = bytearray(memoryview(frames[1]).cast("B"))
    frames[1] = buf
    back = decode(frames)
    buf[0] ^= 0xFF  # the decoded array is a view of the received frame, not a copy
    assert back.prompt_token_ids[0] != msg.prompt_token_ids[0]


def test_rollout_token_versions_and_validation():
    s = make_rollout(0, n_resp=5, version=3)
    assert s.token_versions().tolist() == [3, 3, 4, 4, 4]
    kw = dict(task_id="t", family="x", level=1, group_id="g", sample_index=0, prompt_token_ids=[1],
              response_token_ids=[1, 2], policy_version=1)
    with pytest.raises(ValueError, match="response_logprobs: length 1 != response_token_ids length 2"):
        RolloutSample(**kw, response_logprobs=[0.0])
    with pytest.raises(ValueError, match="version_segments: must start with"):
        RolloutSample(**kw, response_logprobs=[0.0, 0.0], version_segments=[(0, 2)])
    with pytest.raises(ValueError, match="expected dtype kind"):
        RolloutSample(**{**kw, "response_token_ids": [1.5, 2.0]}, response_logprobs=[0.0, 0.0])


def _good():
    return encode(make_rollout(9))


def _with_header(obj):
    frames = _good()
    frames[0] = msgspec.msgpack.encode(obj)
    return frames


def _header_dict():
    return msgspec.msgpack.decode(_good()[0])


BAD = {
    "truncated header": (lambda: [_good()[0][:-7], *_good()[1:]], "malformed"),
    "garbage": (lambda: [b"\xc1\xff\x00garbage"], "malformed"),
    "not a map": (lambda: [msgspec.msgpack.encode([1, 2, 3])], "malformed"),
    "empty": (lambda: [], "empty"),
    "wrong schema": (lambda: _with_header({**_header_dict(), "schema": SCHEMA_VERSION + 1}), "schema"),
    "unknown type": (lambda: _with_header({**_header_dict(), "type": "nope"}), "type"),
    "missing field": (lambda: _with_header({k: v for k, v in _header_dict().items() if k != "task_id"}), "invalid"),
    "wrong field type": (lambda: _with_header({**_header_dict(), "level": "two"}), "invalid"),
    "missing frame": (lambda: _good()[:-1], "frames"),
    "extra frame": (lambda: [*_good(), b"xx"], "frames"),
    "wrong declared length": (
        lambda: _with_header({**_header_dict(), "prompt_token_ids": {"$oob": 1, "dtype": "int32", "len": 8}}),
        "size"),
    "short array frame": (lambda: [*_good()[:1], b"\x00" * 3, *_good()[2:]], "size"),
    "frame reused": (
        lambda: _with_header({**_header_dict(), "response_token_ids": {"$oob": 1, "dtype": "int32", "len": 7}}),
        "frames"),
    "bad dtype": (
        lambda: _with_header({**_header_dict(), "prompt_token_ids": {"$oob": 1, "dtype": "object", "len": 7}}),
        "invalid"),
    "oversized": (lambda: [*_good()[:1], np.zeros(2000, np.int32), *_good()[2:]], "oversized"),
    "failed check": (lambda: _with_header({**_header_dict(), "version_segments": [[0, 99]]}), "invalid"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_rejected_with_reason(case):
    make, reason = BAD[case]
    with pytest.raises(FrameError) as info:
        decode(make(), max_frame_bytes=4096)
    assert info.value.reason == reason, str(info.value)


def test_schema_error_names_both_versions():
    with pytest.raises(FrameError, match=f"schema version {SCHEMA_VERSION + 4}, this side speaks {SCHEMA_VERSION}"):
        decode(_with_header({**_header_dict(), "schema": SCHEMA_VERSION + 4}))


def test_expect_type():
    with pytest.raises(FrameError, match="expected Control, got RolloutSample"):
        decode(_good(), expect=Control)


def test_bucket_header_checks_extents():
    with pytest.raises(ValueError, match="beyond bucket nbytes 8"):
        _header(nbytes=8)
    with pytest.raises(ValueError, match="nbytes: w declares 10"):
        TensorSpec("w", "bfloat16", (2, 4), 0, 10)


def test_family_keeps_its_serialised_keys_so_old_files_and_checkpoints_still_load():
    """One name in code (`family`); the keys every written file and frame already use stay."""
    from peirce.tasks.base import Task, decode_task, encode_task

    task = Task(id="t", family="deduction", level=1, split="train", puzzle={}, puzzle_text="p", solution_text="s")
    assert msgspec.msgpack.decode(encode_task(task))["task"] == "deduction"
    assert decode_task(msgspec.msgpack.encode({**msgspec.to_builtins(task)})).family == "deduction"
    sample = RolloutSample(task_id="t", family="deduction", level=1, group_id="g", sample_index=0,
                           prompt_token_ids=[1], response_token_ids=[2], response_logprobs=[-0.1], policy_version=0)
    head = msgspec.msgpack.decode(encode(sample)[0])
    assert head["task_name"] == "deduction" and "family" not in head


def test_a_worker_fault_round_trips_and_a_lying_one_is_refused():
    from peirce.transport.wire import MAX_FAULT_DETAIL, WorkerFault

    fault = WorkerFault.of("unservable", "task 'x': " + "d" * 5000)
    back = decode(encode(fault))
    assert isinstance(back, WorkerFault) and back.reason == "unservable" and len(back.detail) == MAX_FAULT_DETAIL
    for bad in (WorkerFault(reason=""), WorkerFault(reason="Spaces and CAPS"), WorkerFault(reason="r" * 65),
                WorkerFault(reason="x", detail="d" * (MAX_FAULT_DETAIL + 1))):
        with pytest.raises(FrameError):
            decode(encode(bad))
