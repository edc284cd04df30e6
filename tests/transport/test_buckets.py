"""Bucket plans are pure and exact; pack/unpack round-trips bit for bit; corruption is caught."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peirce.transport.buckets import BucketPlan, checksum, new_buffers, pack, unpack, verify
from peirce.transport.shm_files import ALIGN
from peirce.transport.frames import FrameError, decode, encode
from peirce.transport.weight_sync import WEIGHT_MAX_HEADER_BYTES
from peirce.transport.wire import DTYPE_ITEMSIZE, MAX_TENSORS_PER_BUCKET, WeightBucketHeader


def test_plan_sizes_order_and_big_tensor():
    specs = [("a", (10,), "float32"), ("b", (3,), "bfloat16"), ("c", (100,), "float32"),
             ("big", (1000,), "int64"), ("d", (4,), "float32")]
    plan = BucketPlan.from_tensors(specs, bucket_bytes=512)
    layout = [[(t.name, t.offset, t.nbytes) for t in b.tensors] for b in plan.buckets]
    assert layout == [
        [("a", 0, 40), ("b", 64, 6)],  # b starts at the next ALIGN boundary
        [("c", 0, 400)],  # 128 + 400 > 512: new bucket
        [("big", 0, 8000)],  # larger than a bucket: alone
        [("d", 0, 16)],
    ]
    assert [b.nbytes for b in plan.buckets] == [70, 400, 8000, 16]
    assert [t.name for b in plan.buckets for t in b.tensors] == [n for n, _, _ in specs]


def test_plan_keeps_tensor_tables_within_what_receivers_accept():
    n = MAX_TENSORS_PER_BUCKET + 5
    specs = [(f"model.layers.{i}.mlp.experts.{i % 128}.bias", (1,), "float32") for i in range(n)]
    plan = BucketPlan.from_tensors(specs, bucket_bytes=1 << 40)
    assert [len(b.tensors) for b in plan.buckets] == [MAX_TENSORS_PER_BUCKET, 5]
    b = plan.buckets[0]
    header = WeightBucketHeader(version=1, bucket_index=0, n_buckets=2, tensors=list(b.tensors), nbytes=b.nbytes,
                                checksum=0, checksum_algo="xxh3_64")
    back = decode(encode(header), max_header_bytes=WEIGHT_MAX_HEADER_BYTES)
    assert len(back.tensors) == MAX_TENSORS_PER_BUCKET


def test_plan_rejects_bad_input():
    with pytest.raises(ValueError, match="bucket_bytes: must be > 0, got 0"):
        BucketPlan.from_tensors([("a", (1,), "float32")], 0)
    with pytest.raises(ValueError, match="duplicate tensor name 'a'"):
        BucketPlan.from_tensors([("a", (1,), "float32"), ("a", (2,), "float32")], 64)
    with pytest.raises(ValueError, match="dtype: a has 'complex64'"):
        BucketPlan.from_tensors([("a", (1,), "complex64")], 64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 40), max_size=3), st.sampled_from(sorted(DTYPE_ITEMSIZE))),
                max_size=30),
       st.integers(1, 4096))
def test_plan_invariants(shapes, bucket_bytes):
    specs = [(f"t{i}", tuple(s), d) for i, (s, d) in enumerate(shapes)]
    plan = BucketPlan.from_tensors(specs, bucket_bytes)
    flat = [t for b in plan.buckets for t in b.tensors]
    assert [t.name for t in flat] == [n for n, _, _ in specs]
    for b in plan.buckets:
        assert b.tensors, "no empty buckets"
        assert b.nbytes == max(t.offset + t.nbytes for t in b.tensors)
        assert b.nbytes <= bucket_bytes or len(b.tensors) == 1
        assert all(t.offset % ALIGN == 0 for t in b.tensors)
        ends = [(t.offset, t.offset + t.nbytes) for t in b.tensors]
        assert all(e0 <= s1 for (_, e0), (s1, _) in zip(ends, ends[1:])), "no overlap"
    for t in flat:
        assert t.nbytes == DTYPE_ITEMSIZE[t.dtype] * math.prod(t.shape)


def _state_dict():
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(50, 16, generator=g).to(torch.bfloat16),
        "layer.0.w": torch.randn(16, 16, generator=g),
        "layer.0.b": torch.randn(16, generator=g).to(torch.bfloat16),
        "steps": torch.tensor([2**40 + 3, -7], dtype=torch.int64),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 4),
        "mask": torch.tensor([True, False, True]),
        "strided": torch.randn(8, 6, generator=g).t(),  # non-contiguous source
    }


@pytest.mark.parametrize("bucket_bytes", [64, 700, 1 << 20])
def test_pack_unpack_exact(bucket_bytes):
    sd = _state_dict()
    plan = BucketPlan.from_state_dict(sd, bucket_bytes)
    assert plan.matches(sd)
    out = {}
    packed = pack(sd, plan, version=7)
    assert [h.bucket_index for h, _ in packed] == list(range(plan.n_buckets))
    for header, buf in packed:
        assert header.version == 7 and header.n_buckets == plan.n_buckets
        for name, tensor in unpack(header, buf):
            out[name] = tensor
    assert list(out) == list(sd)
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape
        assert torch.equal(out[name], t), name


def test_unpack_is_zero_copy():
    sd = {"w": torch.ones(4, dtype=torch.bfloat16)}
    ((header, buf),) = pack(sd, BucketPlan.from_state_dict(sd))
    ((_, view),) = list(unpack(header, buf))
    buf[:2] = 0  # bf16 1.0 is 0x3F80; zero the first element's bytes
    assert view[0].item() == 0.0 and view[1].item() == 1.0


def test_checksum_mismatch_detected():
    sd = _state_dict()
    packed = pack(sd, BucketPlan.from_state_dict(sd, 1 << 20))
    header, buf = packed[0]
    verify(header, buf)
    buf[5] ^= 1
    with pytest.raises(FrameError) as info:
        list(unpack(header, buf))
    assert info.value.reason == "checksum"
    with pytest.raises(FrameError, match="size"):
        verify(header, buf[:-1])


def test_checksum_algorithms_differ_and_are_stable():
    data = bytes(range(256)) * 10
    assert checksum(data, "crc32") != checksum(data, "xxh3_64")
    assert checksum(data, "xxh3_64") == checksum(bytearray(data), "xxh3_64")
    with pytest.raises(FrameError, match="unavailable"):
        checksum(data, "md5")


def test_pack_rejects_mismatched_state_dict():
    sd = _state_dict()
    plan = BucketPlan.from_state_dict(sd)
    with pytest.raises(ValueError, match=r"state_dict\['layer.0.w'\]: planned float32\[16, 16\]"):
        pack({**sd, "layer.0.w": torch.zeros(4, 4)}, plan)
    assert not plan.matches({**sd, "layer.0.w": torch.zeros(4, 4)})


def test_pack_into_reused_buffers_is_exact_and_identical_to_fresh():
    sd = _state_dict()
    plan = BucketPlan.from_state_dict(sd, 700)
    out = new_buffers(plan)
    for scale in (1, -2):  # the second pack overwrites the first in place
        scaled = {k: (v * scale if v.is_floating_point() else v) for k, v in sd.items()}
        reused = pack(scaled, plan, version=scale + 5, out=out)
        fresh = pack(scaled, plan, version=scale + 5)
        assert [h for h, _ in reused] == [h for h, _ in fresh]  # same bytes: same checksums
        assert all(buf is arr for (_, buf), arr in zip(reused, out))
        got = {n: t for h, b in reused for n, t in unpack(h, b)}
        assert all(torch.equal(got[n], t) for n, t in scaled.items())
    with pytest.raises(ValueError, match="out: buffer sizes"):
        pack(sd, plan, out=out[:-1])


def test_pack_casts_to_the_planned_dtype_in_one_pass():
    sd = {"w": torch.randn(8, 8), "ids": torch.arange(5), "t": torch.randn(4, 6)[:, ::2]}  # last: strided
    plan = BucketPlan.from_state_dict(sd, dtype=torch.bfloat16)
    assert [t.dtype for b in plan.buckets for t in b.tensors] == ["bfloat16", "int64", "bfloat16"]
    assert plan.matches(sd, torch.bfloat16) and not plan.matches(sd)
    with pytest.raises(ValueError, match=r"planned bfloat16\[8, 8\], got torch.float32\[8, 8\] \(cast=False\)"):
        pack(sd, plan)
    ((header, buf),) = pack(sd, plan, cast=True)
    got = dict(unpack(header, buf))
    assert torch.equal(got["w"], sd["w"].to(torch.bfloat16)) and torch.equal(got["ids"], sd["ids"])
    assert torch.equal(got["t"], sd["t"].to(torch.bfloat16))
