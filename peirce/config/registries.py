"""Registered names a config may use, checked without importing torch.

Rewards and task families are checked against their registries' `names()` (torch-free,
~0.15 s each, imported lazily on first use). The advantage and policy-loss registries
live in modules that import torch (~1 s), so their names are kept here as a torch-free
table; tests/config/test_config.py fails when it drifts from the real registries.
An unknown name raises `peirce.registry.UnknownNameError` (a ValueError, so pydantic
reports it under the field) with the message the registries' own lookups give; only
several unknown families at once get one plain ValueError listing the first five.
"""

from __future__ import annotations

from collections.abc import Sequence

from peirce.config.errors import short
from peirce.registry import UnknownNameError

ADVANTAGES: tuple[str, ...] = ("grpo", "reinforce_pp", "reinforce_pp_group", "rloo")
POLICY_LOSSES: tuple[str, ...] = ("ppo_clip", "vanilla_pg")


def _one_of(kind: str, name: str, valid: Sequence[str]) -> str:
    if name not in valid:
        raise UnknownNameError(kind, name, sorted(valid))
    return name


def check_advantage(name: str) -> str:
    return _one_of("advantage estimator", name, ADVANTAGES)


def check_policy_loss(name: str) -> str:
    return _one_of("policy loss", name, POLICY_LOSSES)


def check_reward(name: str) -> str:
    """'auto' (maa for the meta-ability tasks, the family's own reward otherwise) or a registered reward."""
    from peirce.rewards.registry import REWARDS

    return _one_of(REWARDS.kind, name, ["auto", *REWARDS.names()])


def check_families(names: list[str]) -> list[str]:
    from peirce.tasks.base import FAMILIES

    known = FAMILIES.names()
    bad = [n for n in names if n not in known]
    if len(bad) == 1:
        raise UnknownNameError(FAMILIES.kind, bad[0], known)
    if bad:
        shown = ", ".join(short(n, 60) for n in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"unknown task families {shown}; valid: {', '.join(known)}")
    return names
