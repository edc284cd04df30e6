"""Hostile frames: whatever a peer sends, `decode` returns a message or raises FrameError.

Hand-made cases reproduce the two bugs found (a deeply nested header escaping as
RecursionError; a tensor shape with ~100k dims taking minutes to reject), and hypothesis
fuzzes random bytes, random msgpack values in every field, and mutated valid frames.
"""

from __future__ import annotations

import inspect
import sys

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peirce.transport.frames import DEFAULT_MAX_DEPTH, DEFAULT_MAX_HEADER_BYTES, FrameError, decode, encode
from peirce.transport.groups import unpack_messages
from peirce.transport.nesting import nesting_exceeds
from peirce.transport.wire import (
    MAX_TENSOR_DIMS, SCHEMA_VERSION, Control, ControlKind, Msg, RequestSampling, ScoredSample, TaskMsg, TensorSpec,
    WeightBucketHeader, WeightBucketMsg,
)

from transport_helpers import make_rollout, make_task

REASONS = {"oversized", "empty", "malformed", "depth", "type", "schema", "invalid", "size", "frames", "unexpected"}
SENTINEL = "\x00hole\x00"
_HOLE = msgspec.msgpack.encode(SENTINEL)


def _deep_array(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


def _deep_map(depth: int) -> bytes:
    return b"\x81\xa1k" * depth + b"\xc0"


def _header(kind: str) -> dict:
    """A valid header dict (decoded from a real encoding) for each place a value can nest."""
    msgs = {
        "control": Control(kind=ControlKind.READY, payload={"version": 1}),
        "task": TaskMsg(task=make_task(1), group_id="g", sampling=RequestSampling(temperature=1.0)),
        "scored": ScoredSample(sample=make_rollout(1), reward=1.0, correct=True, format_ok=True,
                               reward_details={"answer": "B"}),
    }
    return msgspec.msgpack.decode(encode(msgs[kind])[0])


def _with_hole(where: str) -> tuple[bytes, int]:
    """(header bytes with SENTINEL at `where`, number of array frames the message needs)."""
    if where == "root":
        return _HOLE, 0
    kind, _, path = where.partition(".")
    hdr = _header(kind)
    if path == "unknown_field":
        hdr["zz_unknown"] = SENTINEL  # skipped by the decoders, but still parsed
    elif path == "type":
        hdr["type"] = SENTINEL
    else:
        node = hdr
        *parents, leaf = path.split("/")
        for p in parents:
            node = node[p]
        node[leaf] = SENTINEL
    n_frames = 3 if kind == "scored" else 0
    return msgspec.msgpack.encode(hdr), n_frames


PLACES = ["root", "control.payload/version", "control.unknown_field", "control.type", "task.sampling/temperature",
          "task.task/puzzle/n", "scored.reward_details/answer", "scored.sample/completion"]


def _frames_with(where: str, value: bytes) -> list:
    hdr, n = _with_hole(where)
    assert hdr.count(_HOLE) == 1
    arrays = [encode(make_rollout(1))[i] for i in range(1, n + 1)]
    return [hdr.replace(_HOLE, value), *arrays]


@pytest.mark.parametrize("where", PLACES)
@pytest.mark.parametrize("depth", [DEFAULT_MAX_DEPTH + 1, 2_000, 100_000])
@pytest.mark.parametrize("shape", ["array", "map"])
def test_deeply_nested_header_is_a_depth_frame_error(where, depth, shape):
    value = _deep_array(depth) if shape == "array" else _deep_map(depth)
    with pytest.raises(FrameError) as info:
        decode(_frames_with(where, value))
    assert info.value.reason == "depth", str(info.value)


def test_nesting_within_the_limit_decodes():
    frames = _frames_with("control.payload/version", _deep_array(DEFAULT_MAX_DEPTH - 3))
    msg = decode(frames)
    assert isinstance(msg, Control)
    v = msg.payload["version"]
    for _ in range(DEFAULT_MAX_DEPTH - 3):
        assert isinstance(v, list) and len(v) == 1
        v = v[0]
    assert v is None
    with pytest.raises(FrameError) as info:  # the limit is the caller's to choose
        decode(frames, max_depth=8)
    assert info.value.reason == "depth"


def test_recursion_error_from_a_deep_caller_stack_is_a_frame_error():
    """Nesting under max_depth can still overflow a thread that is already deep."""
    frames = _frames_with("control.payload/version", _deep_array(DEFAULT_MAX_DEPTH - 3))

    def at_depth(k: int):
        return at_depth(k - 1) if k else decode(frames)

    old = sys.getrecursionlimit()
    here = len(inspect.stack())
    sys.setrecursionlimit(here + 40)
    try:
        with pytest.raises(FrameError) as info:
            at_depth(20)
    finally:
        sys.setrecursionlimit(old)
    assert info.value.reason == "depth"


def test_oversized_header_is_rejected_before_parsing():
    frames = _frames_with("control.payload/version", msgspec.msgpack.encode("x" * DEFAULT_MAX_HEADER_BYTES))
    with pytest.raises(FrameError, match=f"> max_header_bytes {DEFAULT_MAX_HEADER_BYTES}") as info:
        decode(frames)
    assert info.value.reason == "oversized"
    big = msgspec.msgpack.encode({"type": "control", "schema": SCHEMA_VERSION, "kind": "ack",
                                  "payload": {"x": "y" * 5000}})
    assert isinstance(decode([big], max_header_bytes=len(big)), Control)
    with pytest.raises(FrameError, match="max_header_bytes"):
        decode([big], max_header_bytes=len(big) - 1)


def _bucket_header_bytes(shape: list[int], n_tensors: int = 1, nbytes: int = 0) -> bytes:
    return msgspec.msgpack.encode({
        "type": "bucket_header", "schema": SCHEMA_VERSION, "version": 1, "bucket_index": 0, "n_buckets": 1,
        "tensors": [["w", "uint8", shape, 0, nbytes]] * n_tensors, "nbytes": nbytes, "checksum": 0,
        "checksum_algo": "xxh3_64"})


@pytest.mark.timeout(30)
def test_huge_tensor_shape_is_rejected_from_its_length_alone():
    """~880 KB of dims took 108 s to reject (math.prod of 100k huge ints); now the dim count
    is checked from the array header, before any dim is read."""
    hdr = _bucket_header_bytes([2**63 - 1] * 100_000)
    assert 800_000 < len(hdr) < DEFAULT_MAX_HEADER_BYTES
    with pytest.raises(FrameError) as info:
        decode([hdr])
    assert info.value.reason == "invalid"
    assert f"length <= {MAX_TENSOR_DIMS}" in info.value.detail and "tensors[0]" in info.value.detail
    ok = _bucket_header_bytes([1] * MAX_TENSOR_DIMS, nbytes=1)
    assert isinstance(decode([ok]), WeightBucketHeader)


def test_too_many_tensors_and_built_shapes_are_bounded():
    with pytest.raises(FrameError, match="length <= 65536"):
        decode([_bucket_header_bytes([1], n_tensors=(1 << 16) + 1)])
    with pytest.raises(ValueError, match=f"65 dims > MAX_TENSOR_DIMS {MAX_TENSOR_DIMS}"):
        TensorSpec("w", "uint8", (1,) * 65, 0, 1)


def test_non_buffer_frame_is_a_frame_error_not_a_type_error():
    with pytest.raises(FrameError) as info:
        decode([encode(Control(kind=ControlKind.ACK))[0], 42])
    assert info.value.reason == "unexpected" and "TypeError" in info.value.detail


# -- the nesting scanner agrees with a plain recursive count --------------------------------

_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
            | st.text(max_size=300) | st.binary(max_size=300)
            | st.builds(msgspec.msgpack.Ext, st.integers(0, 127), st.binary(max_size=300)))
_values = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=20) | st.dictionaries(st.text(max_size=5), kids,
                                                                                            max_size=20),
                       max_leaves=60)


def _nonempty_depth(x) -> int:
    """Containers open at once counting only non-empty ones (an empty one opens nothing)."""
    if isinstance(x, dict) and x:
        return 1 + max(_nonempty_depth(v) for v in x.values())
    if isinstance(x, list) and x:
        return 1 + max(_nonempty_depth(v) for v in x)
    return 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, limit=st.integers(0, 12))
def test_nesting_scanner_matches_recursive_depth(value, limit):
    data = msgspec.msgpack.encode(value)
    assert nesting_exceeds(data, limit) == (_nonempty_depth(value) > limit)


def test_nesting_scanner_handles_32_bit_lengths():
    wide = [0] * 70_000  # array32
    deep = wide
    for _ in range(40):
        deep = [deep, "s" * 70_000, {"k": b"b" * 70_000}]  # str32, bin32, map
    assert nesting_exceeds(msgspec.msgpack.encode(deep), 40)
    assert not nesting_exceeds(msgspec.msgpack.encode(deep), 41)


# -- fuzzing: only FrameError ever comes out ------------------------------------------------

def _decode_or_reason(frames) -> str | None:
    try:
        msg = decode(frames, max_frame_bytes=1 << 16)
    except FrameError as err:
        assert err.reason in REASONS - {"unexpected"}, err  # "unexpected" is the safety net, not a rule
        return err.reason
    assert isinstance(msg, Msg)
    return None


@settings(max_examples=400, deadline=None)
@given(header=st.binary(max_size=512), extra=st.lists(st.binary(max_size=64), max_size=3))
def test_fuzz_random_bytes(header, extra):
    _decode_or_reason([header, *extra])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(PLACES), value=_values)
def test_fuzz_random_values_in_every_field(where, value):
    _decode_or_reason(_frames_with(where, msgspec.msgpack.encode(value)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(PLACES), openers=st.lists(st.sampled_from([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01",
                                                                      b"\xde\x00\x01\x01"]), min_size=1, max_size=4),
       depth=st.integers(1, 3000), value=_values)
def test_fuzz_deep_values_anywhere(where, openers, depth, value):
    prefix = b"".join(openers[i % len(openers)] for i in range(depth))
    reason = _decode_or_reason(_frames_with(where, prefix + msgspec.msgpack.encode(value)))
    if depth > DEFAULT_MAX_DEPTH:
        assert reason == "depth"


def _good_frames() -> dict[str, list]:
    bucket_hdr = WeightBucketHeader(version=2, bucket_index=0, n_buckets=1, checksum=1, checksum_algo="xxh3_64",
                                    tensors=[TensorSpec("w", "bfloat16", (2, 4), 0, 16)], nbytes=16)
    msgs = {
        "task": TaskMsg(task=make_task(1), group_id="g1", n_samples=8, sampling=RequestSampling(temperature=1.0)),
        "rollout": make_rollout(2),
        "scored": ScoredSample(sample=make_rollout(4), reward=1.0, correct=True, format_ok=True),
        "bucket": WeightBucketMsg(header=bucket_hdr, data=np.arange(16, dtype=np.uint8)),
        "control": Control(kind=ControlKind.NACK, payload={"version": 3, "reason": "x"}),
    }
    return {k: [bytes(memoryview(f).cast("B")) for f in encode(m)] for k, m in msgs.items()}


GOOD = _good_frames()


@settings(max_examples=600, deadline=None)
@given(kind=st.sampled_from(sorted(GOOD)), data=st.data())
def test_fuzz_mutated_valid_frames(kind, data):
    frames = list(GOOD[kind])
    header = bytearray(frames[0])
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]), label="op")
        pos = data.draw(st.integers(0, max(0, len(header) - 1)), label="pos")
        byte = data.draw(st.integers(0, 255), label="byte")
        if op == "flip" and header:
            header[pos] ^= 1 << (byte % 8)
        elif op == "set" and header:
            header[pos] = byte
        elif op == "insert":
            header.insert(pos, byte)
        elif op == "delete" and header:
            del header[pos]
        elif op == "truncate":
            del header[pos:]
    frames[0] = bytes(header)
    if data.draw(st.booleans(), label="drop a frame") and len(frames) > 1:
        frames.pop()
    _decode_or_reason(frames)


def test_group_header_is_bounded_by_its_frame_count():
    frames = [msgspec.msgpack.encode([1] * 100_000), *encode(Control(kind=ControlKind.ACK))]
    with pytest.raises(FrameError, match="group header is") as info:
        unpack_messages(frames)
    assert info.value.reason == "oversized"
    with pytest.raises(FrameError) as info:
        unpack_messages([msgspec.msgpack.encode([1, 1]), b"\x91" * 50_000 + b"\xc0", b"x"])
    assert info.value.reason == "depth"
