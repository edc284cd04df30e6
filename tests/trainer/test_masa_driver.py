"""The real Orchestrator resumes a MASA run in the middle of sequential mode: a prompt whose
meta predictions were in when the checkpoint was written asks, after the restart, for
exactly the solutions it would have (the cutoff's max_tokens, the hint), not for new meta
rollouts, and the driver's checkpoint is JSON.

As in tests/trainer/test_orchestrator_fuzz.py the driver gets an injected Topology: real
loopback WorkDispatchers, no actors (`IdlePool`, no learner): Ray actors cannot run in a
fast test; tests/trainer/test_masa_e2e.py runs MASA with all of them."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import numpy as np

from peirce.config import TrainConfig, load_config
from peirce.masa.ids import is_meta_group
from actorless import actorless_driver, close_driver

from peirce.trainer.orchestrator import Orchestrator
from peirce.trainer.planner import Phase
from peirce.transport.groups import pack_messages
from peirce.transport.wire import RolloutSample, TaskMsg

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "masa-smoke.yaml"


def _driver(run_dir, restored: dict | None = None) -> Orchestrator:
    cfg = load_config(TrainConfig, CONFIG, [f"run_dir={run_dir}", "algorithm.meta.switch_step=0"])
    return actorless_driver(cfg, restored)


def _meta_results(msg: TaskMsg, length: int) -> list[bytes]:
    text = '<meta>short</meta>{"notions": ["upper case"], "pass_rate": 4, "solution_length": %d}' % length
    samples = [RolloutSample(task_id=msg.task.id, family=msg.task.family, level=msg.task.level,
                             group_id=msg.group_id, sample_index=i, prompt_token_ids=np.arange(3),
                             response_token_ids=np.arange(5), response_logprobs=np.zeros(5, np.float32),
                             policy_version=0, completion=text) for i in range(msg.n_samples)]
    return [bytes(memoryview(f)) for f in pack_messages(samples)]


def test_a_restart_mid_sequence_asks_for_the_pending_solutions_only(tmp_path):
    first = _driver(tmp_path / "run")
    try:
        submits = first.planner.admit(first.source)
        first._carry_out(submits)
        assert submits and all(is_meta_group(s.gid) for s in submits)  # sequential: meta first
        gid = submits[0].gid
        first.on_rollout_result(gid, _meta_results(submits[0].messages[0], length=3))
        group = first.planner.groups[gid.removesuffix(".meta")]
        assert group.phase is Phase.ROLLOUT
        before = group.msg
        assert before.sampling.max_tokens == 6 < first.cfg.rollout.max_tokens  # 2 x 3, under the clamp of 8
        assert before.prompt is not None and before.prompt.endswith("notions: upper case.")
        state = json.loads(json.dumps(first._state(first.version)))
    finally:
        close_driver(first)
    assert [m["task_id"] for m in state["meta"]["mid_sequence"]] == [before.task.id]
    second = _driver(tmp_path / "run", restored=state)
    try:
        again = second.planner.admit(second.source)
        first_msg = again[0].messages[0]
        assert first_msg.task.id == before.task.id and not is_meta_group(again[0].gid)
        assert msgspec.structs.asdict(first_msg.sampling) == msgspec.structs.asdict(before.sampling)
        assert (first_msg.prompt, first_msg.phase) == (before.prompt, "solve")
        # the other in-flight prompts (their predictions were not in) start over with meta rollouts
        assert len(again) >= 2 and all(is_meta_group(s.gid) for s in again[1:])
    finally:
        close_driver(second)
