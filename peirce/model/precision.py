"""Which floating-point format the learner trains in.

Why: bf16 halves memory and is fast on GPUs and on CPUs with native bf16 instructions
(AVX512-BF16, AMX), but on CPUs without them torch emulates it: a bf16 matmul was ~80x
slower than fp32 on an AVX2-only host. `auto` picks bf16 only where the hardware has it.
The rollout engines follow the same rule (`peirce.rollout.engine.resolve_dtype`).
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_is_native() -> bool:
    """True on CUDA or on a CPU with bf16 instructions."""
    import torch

    return torch.cuda.is_available() or cpu_has_native_bf16()


def use_bf16(precision: str) -> bool:
    """Learner precision: 'bf16', 'fp32', or 'auto' (bf16 where `bf16_is_native`)."""
    if precision != "auto":
        return precision == "bf16"
    return bf16_is_native()

