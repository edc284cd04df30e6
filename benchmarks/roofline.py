"""Roofline arithmetic for decode: the tokens/s a machine could reach, and which limit binds.

Why: a tokens/s figure alone says nothing about how much is left to gain. Decode at batch
`b` reads every weight once per step and shares that read among `b` sequences, while each
sequence also reads its own KV cache; it does ~2 flops per parameter per token. So per
generated token

    bytes  ~= weight_bytes / b + kv_bytes_per_position * context
    flops  ~= 2 * params + 4 * layers * attn_width * context   (matmuls + attention scores/values)

and the ceiling is 1 / max(bytes / bandwidth, flops / peak_flops) tokens/s. The limit whose
time is larger is the one that applies. Pure functions; the peaks come from the same run
(benchmarks/bench_rollout.py measures them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

Bound = Literal["compute", "bandwidth"]


@dataclass(frozen=True)
class DecodeShape:
    """What one decode token costs, from a Llama-style config and the parameter count."""

    params: int  # every parameter a token's matmuls touch (tied embeddings counted once: the lm_head)
    layers: int
    attn_width: int  # num_attention_heads * head_dim (query side of attention)
    kv_width: int  # num_key_value_heads * head_dim (per K and per V)
    dtype_bytes: int

    def __post_init__(self) -> None:
        for name in ("params", "layers", "attn_width", "kv_width", "dtype_bytes"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"DecodeShape.{name}={value!r}: must be an int >= 1")

    @classmethod
    def from_config(cls, config: dict[str, Any], params: int, dtype: str) -> DecodeShape:
        """`config`: a Hugging Face config.json as a dict; `dtype`: a key of DTYPE_BYTES."""
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype={dtype!r}: must be one of {sorted(DTYPE_BYTES)}")
        heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or config["hidden_size"] // heads)
        kv_heads = int(config.get("num_key_value_heads") or heads)
        return cls(params=int(params), layers=int(config["num_hidden_layers"]), attn_width=heads * head_dim,
                   kv_width=kv_heads * head_dim, dtype_bytes=DTYPE_BYTES[dtype])

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_position(self) -> int:
        """KV cache bytes of one cached position of one sequence (K and V, every layer)."""
        return 2 * self.layers * self.kv_width * self.dtype_bytes


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}={value!r}: must be > 0")


def bytes_per_token(shape: DecodeShape, batch: int, context: float) -> float:
    """Bytes moved per generated token at `batch` sequences with `context` cached positions each."""
    _check_positive("batch", batch)
    if context < 0:
        raise ValueError(f"context={context!r}: must be >= 0")
    return shape.weight_bytes / batch + shape.kv_bytes_per_position * context


def flops_per_token(shape: DecodeShape, context: float) -> float:
    """2 flops per parameter, plus QK^T and PV over `context` positions (2 * 2 * attn_width each layer)."""
    if context < 0:
        raise ValueError(f"context={context!r}: must be >= 0")
    return 2.0 * shape.params + 4.0 * shape.layers * shape.attn_width * context


def mean_decode_context(prompt_tokens: float, new_tokens: int) -> float:
    """Mean cached positions while generating `new_tokens` after the prompt (token i sees prompt + i)."""
    if prompt_tokens < 0 or new_tokens < 1:
        raise ValueError(f"prompt_tokens={prompt_tokens!r}, new_tokens={new_tokens!r}: need >= 0 and >= 1")
    return prompt_tokens + (new_tokens - 1) / 2


@dataclass(frozen=True)
class Roofline:
    """The decode ceiling at one batch size and the limit that sets it."""

    tokens_per_s: float
    bound: Bound
    compute_tokens_per_s: float
    bandwidth_tokens_per_s: float
    bytes_per_token: float
    flops_per_token: float


def decode_roofline(shape: DecodeShape, batch: int, context: float, *, peak_flops: float,
                    bandwidth: float) -> Roofline:
    """Ceiling tokens/s for decode; `peak_flops` in flop/s, `bandwidth` in bytes/s."""
    _check_positive("peak_flops", peak_flops)
    _check_positive("bandwidth", bandwidth)
    nbytes, flops = bytes_per_token(shape, batch, context), flops_per_token(shape, context)
    compute, memory = peak_flops / flops, bandwidth / nbytes
    bound: Bound = "compute" if compute < memory else "bandwidth"
    return Roofline(tokens_per_s=min(compute, memory), bound=bound, compute_tokens_per_s=compute,
                    bandwidth_tokens_per_s=memory, bytes_per_token=nbytes, flops_per_token=flops)


def fraction_of_bound(measured_tokens_per_s: float, roof: Roofline) -> float:
    """Measured / ceiling (1.0 = at the limit; above 1 means the model of the cost is wrong)."""
    if measured_tokens_per_s < 0:
        raise ValueError(f"measured_tokens_per_s={measured_tokens_per_s!r}: must be >= 0")
    return measured_tokens_per_s / roof.tokens_per_s


def gemm_flops(m: int, k: int, n: int) -> int:
    """Flops of one [m, k] x [k, n] matmul (a multiply and an add per term)."""
    return 2 * m * k * n
