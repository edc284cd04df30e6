"""Stable numbers from names: the same parts give the same number in every process and run.

Python's `hash()` is salted per process, and an RNG's stream depends on how many draws came
before; decisions that must survive a resume, a retry or another worker (which gated prompt
is audited, which seed a group samples from) are derived from their names instead.
"""

from __future__ import annotations

import hashlib


def stable_u64(*parts: object) -> int:
    """A 64-bit number fixed by `parts` (joined by NUL; lone surrogates allowed)."""
    text = "\x00".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def group_seed(run_seed: int, task_id: str, phase: str) -> int:
    """The sampling seed of one group: fixed by (run seed, task id, phase), not by dispatch
    order or worker, so a retried, resumed or rerun group draws the same tokens from the
    same weights. 62 bits: vLLM gives sample i the seed `seed + i`, which must stay < 2**63."""
    return stable_u64(run_seed, task_id, phase) >> 2
