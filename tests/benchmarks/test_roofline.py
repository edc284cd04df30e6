"""benchmarks/roofline.py against hand-computed cases (no timing here: figures live in benchmarks/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import roofline  # noqa: E402
from roofline import DecodeShape, decode_roofline  # noqa: E402

# params 100, 2 layers, attention width 4, KV width 2, 2-byte dtype:
# weights 200 B; KV per cached position 2 (K,V) * 2 layers * 2 * 2 B = 16 B
SMALL = DecodeShape(params=100, layers=2, attn_width=4, kv_width=2, dtype_bytes=2)


def test_small_shape_bytes():
    assert SMALL.weight_bytes == 200
    assert SMALL.kv_bytes_per_position == 16


def test_bytes_per_token_share_weights_across_the_batch():
    # 200 / 4 + 16 * 10 = 50 + 160
    assert roofline.bytes_per_token(SMALL, batch=4, context=10) == 210
    # batch 1, empty cache: the whole weight read per token
    assert roofline.bytes_per_token(SMALL, batch=1, context=0) == 200


def test_flops_per_token_counts_params_and_attention():
    # 2 * 100 + 4 * 2 layers * 4 width * 10 positions = 200 + 320
    assert roofline.flops_per_token(SMALL, context=10) == 520
    assert roofline.flops_per_token(SMALL, context=0) == 200


def test_compute_bound_case():
    # 520 flops/token at 1040 flop/s -> 2 tok/s; 210 B/token at 2100 B/s -> 10 tok/s
    roof = decode_roofline(SMALL, batch=4, context=10, peak_flops=1040, bandwidth=2100)
    assert roof.bound == "compute"
    assert roof.tokens_per_s == pytest.approx(2.0)
    assert roof.compute_tokens_per_s == pytest.approx(2.0)
    assert roof.bandwidth_tokens_per_s == pytest.approx(10.0)
    assert roofline.fraction_of_bound(1.0, roof) == pytest.approx(0.5)


def test_bandwidth_bound_case():
    # 52000 / 520 = 100 tok/s of compute; 2100 / 210 = 10 tok/s of bandwidth
    roof = decode_roofline(SMALL, batch=4, context=10, peak_flops=52000, bandwidth=2100)
    assert roof.bound == "bandwidth"
    assert roof.tokens_per_s == pytest.approx(10.0)
    assert roofline.fraction_of_bound(7.5, roof) == pytest.approx(0.75)


def test_bigger_batch_moves_the_bound_toward_compute():
    # batch 1, context 0: 200 B and 200 flops per token; at 1000 flop/s and 500 B/s:
    # compute 5 tok/s, bandwidth 2.5 tok/s -> bandwidth. At batch 100: 2 B/token -> 250 tok/s -> compute.
    assert decode_roofline(SMALL, batch=1, context=0, peak_flops=1000, bandwidth=500).bound == "bandwidth"
    roof = decode_roofline(SMALL, batch=100, context=0, peak_flops=1000, bandwidth=500)
    assert roof.bound == "compute"
    assert roof.tokens_per_s == pytest.approx(5.0)


def test_smollm2_135m_from_its_config():
    config = {"num_attention_heads": 9, "head_dim": 64, "hidden_size": 576, "num_key_value_heads": 3,
              "num_hidden_layers": 30}
    shape = DecodeShape.from_config(config, params=134_515_008, dtype="bfloat16")
    assert (shape.attn_width, shape.kv_width, shape.layers, shape.dtype_bytes) == (576, 192, 30, 2)
    assert shape.kv_bytes_per_position == 2 * 30 * 192 * 2 == 23040
    assert shape.weight_bytes == 269_030_016
    # no head_dim / num_key_value_heads: hidden / heads, and multi-head attention
    plain = DecodeShape.from_config({"num_attention_heads": 4, "hidden_size": 64, "num_hidden_layers": 1},
                                    params=10, dtype="float32")
    assert (plain.attn_width, plain.kv_width, plain.dtype_bytes) == (64, 64, 4)


def test_mean_decode_context_and_gemm_flops():
    assert roofline.mean_decode_context(40, 128) == 40 + 63.5  # token i (0-based) sees prompt + i positions
    assert roofline.mean_decode_context(0, 1) == 0
    assert roofline.gemm_flops(8, 576, 1536) == 2 * 8 * 576 * 1536 == 14_155_776


@pytest.mark.parametrize("call, field", [
    (lambda: DecodeShape(params=0, layers=1, attn_width=1, kv_width=1, dtype_bytes=2), "params"),
    (lambda: DecodeShape(params=1, layers=1, attn_width=1, kv_width=1, dtype_bytes=2.0), "dtype_bytes"),
    (lambda: DecodeShape.from_config({}, params=1, dtype="int8"), "dtype"),
    (lambda: roofline.bytes_per_token(SMALL, batch=0, context=1), "batch"),
    (lambda: roofline.bytes_per_token(SMALL, batch=1, context=-1), "context"),
    (lambda: decode_roofline(SMALL, 1, 1, peak_flops=0, bandwidth=1), "peak_flops"),
    (lambda: decode_roofline(SMALL, 1, 1, peak_flops=1, bandwidth=float("nan")), "bandwidth"),
    (lambda: roofline.mean_decode_context(10, 0), "new_tokens"),
])
def test_bad_inputs_name_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()

