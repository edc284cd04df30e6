"""Registered names a config may use, checked without importing torch.

The advantage and policy-loss registries live in modules that import torch (~1 s), so
their names are kept here as a torch-free table; tests/config/test_config.py fails
when it drifts from the real registries. Rewards and task families are torch-free
(~0.15 s each), so those registries are imported, lazily, on first use.
"""

from __future__ import annotations

from peirce.config.errors import short

ADVANTAGES: tuple[str, ...] = ("grpo", "reinforce_pp", "reinforce_pp_group", "rloo")
POLICY_LOSSES: tuple[str, ...] = ("ppo_clip", "vanilla_pg")


def _one_of(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> str:
    if name not in valid:
        raise ValueError(f"unknown {kind} {short(name, 60)}; valid: {', '.join(sorted(valid))}")
    return name


def check_advantage(name: str) -> str:
    return _one_of("advantage estimator", name, ADVANTAGES)


def check_policy_loss(name: str) -> str:
    return _one_of("policy loss", name, POLICY_LOSSES)


def check_reward(name: str) -> str:
    """'auto' (maa for the meta-ability tasks, the family's own reward otherwise) or a registered reward."""
    if name == "auto":
        return name
    from peirce.rewards.registry import reward_names

    return _one_of("reward", name, ["auto", *reward_names()])


def check_families(names: list[str]) -> list[str]:
    from peirce.tasks.base import family_names

    known = family_names()
    bad = [n for n in names if n not in known]
    if bad:
        shown = ", ".join(short(n, 60) for n in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"unknown task famil{'y' if len(bad) == 1 else 'ies'} {shown}; valid: {', '.join(known)}")
    return names
