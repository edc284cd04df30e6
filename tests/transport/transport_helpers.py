"""Builders for transport tests (imported by name: tests/ dirs are not packages)."""

from __future__ import annotations

import msgspec
import numpy as np

from peirce.tasks.base import Task
from peirce.transport.wire import RolloutSample


def make_task(i: int = 0) -> Task:
    return Task(id=f"deduction-L2-train-{i:06d}", family="deduction", level=2, split="train",
                puzzle={"formulas": ["A -> B", "A"], "n": i}, puzzle_text="Given A -> B and A ...",
                solution_text="B is true", seed=i)


def make_rollout(i: int = 0, n_prompt: int = 7, n_resp: int = 5, version: int = 3) -> RolloutSample:
    rng = np.random.default_rng(i)
    return RolloutSample(
        task_id=f"t{i}", family="deduction", level=2, group_id=f"g{i // 4}", sample_index=i,
        prompt_token_ids=rng.integers(0, 49152, n_prompt), response_token_ids=rng.integers(0, 49152, n_resp),
        response_logprobs=-rng.random(n_resp).astype(np.float32), policy_version=version,
        version_segments=[(0, version), (min(2, n_resp), version + 1)] if n_resp else [],
        completion="<answer>B</answer>", prefill="", finish_reason="stop", gen_seconds=0.25,
    )


def _plain(x):
    if isinstance(x, msgspec.Struct):
        return {"__type__": type(x).__name__, **{k: _plain(v) for k, v in msgspec.structs.asdict(x).items()}}
    if isinstance(x, np.ndarray):
        return ("ndarray", x.dtype.name, x.tolist())
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def assert_same_msg(a, b) -> None:
    assert _plain(a) == _plain(b)
