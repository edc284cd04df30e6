"""Hostile worker results against the real Orchestrator's result handlers: nothing escapes,
each one is a counted rejection (in Prometheus) and a retry of its group.

The driver is built with an injected Topology: real WorkDispatchers on loopback (the
retries they receive are checked), but no actors: the pools are `IdlePool` and there is
no learner, because Ray actors cannot run in a fast test (tests/trainer/test_engine_e2e.py
drives the whole thing with them).
"""

from __future__ import annotations

import urllib.request

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from peirce.config import TrainConfig, load_config
from peirce.config.profiles import SMOKE_TRAIN, as_overrides
from actorless import actorless_driver, close_driver

from peirce.trainer.orchestrator import Orchestrator
from peirce.trainer.planner import Phase
from peirce.transport.groups import pack_messages
from peirce.transport.wire import Control, ControlKind, RolloutSample, ScoredSample, TaskMsg, WorkerFault


def _driver(run_dir, restored: dict | None = None) -> Orchestrator:
    cfg = load_config(TrainConfig, None, as_overrides({**SMOKE_TRAIN, "name": "fuzz", "run_dir": str(run_dir),
                                                       "tasks.n_per_level": 400}))
    return actorless_driver(cfg, restored)


@pytest.fixture(scope="module")
def orch(tmp_path_factory):
    o = _driver(tmp_path_factory.mktemp("fuzz") / "run")
    yield o
    close_driver(o)


def _wire(messages) -> list[bytes]:
    return [bytes(memoryview(f)) for f in pack_messages(list(messages))]


def _samples(msg: TaskMsg, **over) -> list[RolloutSample]:
    return [RolloutSample(**{"task_id": msg.task.id, "family": msg.task.family, "level": msg.task.level,
                             "group_id": msg.group_id, "sample_index": i, "prompt_token_ids": np.arange(3),
                             "response_token_ids": np.arange(2), "response_logprobs": np.zeros(2, np.float32),
                             "policy_version": 0, **over}) for i in range(msg.n_samples)]


def _live(o: Orchestrator, phase: Phase) -> str:
    """A group in `phase` (admitting, and completing honest rollouts, as needed)."""
    for _ in range(3):
        for gid, group in o.planner.groups.items():
            if group.phase is phase:
                return gid
        rollouts = [gid for gid, g in o.planner.groups.items() if g.phase is Phase.ROLLOUT]
        if phase is Phase.REWARD and rollouts:
            o.on_rollout_result(rollouts[0], _wire(_samples(o.planner.groups[rollouts[0]].msg)))
            continue
        o._carry_out(o.planner.admit(o.source))
    raise AssertionError(f"no group reaches {phase} (in flight: {o.planner.in_flight})")


def _rejected(o: Orchestrator) -> int:
    return sum(o.planner.rejected.values())


def _hostile(msg: TaskMsg, queue: str) -> dict[str, list]:
    honest = _samples(msg)
    scored = [ScoredSample(sample=s, reward=1.0, correct=True, format_ok=True) for s in honest]
    right = honest if queue == "rollout" else scored
    return {
        "empty": [],
        "random bytes": [b"\x00\xffrandom", b"\x93"],
        "huge count header": [msgspec.msgpack.encode([2**40]), b"x"],
        "deep nesting": [msgspec.msgpack.encode([1]), b"\x91" * 200_000 + b"\xc0"],
        "nested counts header": [b"\x91" * 50_000 + b"\x01", b"x"],
        "control message": _wire([Control(kind=ControlKind.STOP)]),
        "task message": _wire([msg]),
        "other stage's samples": _wire(scored if queue == "rollout" else honest),
        "mixed types": _wire([honest[0], scored[1]]),
        "another group": _wire([msgspec.structs.replace(r, group_id="g99999999") for r in honest]
                               if queue == "rollout" else
                               [msgspec.structs.replace(s, sample=msgspec.structs.replace(s.sample, group_id="gX"))
                                for s in scored]),
        "wrong count": _wire(right[:1]),
        "old error marker": [b"ERR", b"\xc3\x28\xa0\xa1"],
        "fault reason not a counter key": _wire([WorkerFault(reason="\xc3(")]),
        "fault without reason": _wire([WorkerFault(reason="")]),
        "frames not buffers": [None, 1.5],
    }


@pytest.mark.parametrize("queue", ["rollout", "reward"])
def test_every_hostile_result_is_a_counted_rejection_and_a_retry(orch, queue):
    phase = Phase.ROLLOUT if queue == "rollout" else Phase.REWARD
    handler = orch.on_rollout_result if queue == "rollout" else orch.on_reward_result
    for name in _hostile(orch.planner.groups[_live(orch, phase)].msg, queue):
        gid = _live(orch, phase)
        payload = _hostile(orch.planner.groups[gid].msg, queue)[name]
        before, pending, failed = _rejected(orch), len(orch.rollout_dispatch.pending), orch.planner.failed_groups
        handler(gid, payload)
        assert _rejected(orch) == before + 1, name
        assert gid not in orch.planner.groups, name  # retried under a new id, or dropped
        retried = len(orch.rollout_dispatch.pending) == pending + 1  # the driver carried the retry out
        assert retried or orch.planner.failed_groups == failed + 1, name
    text = urllib.request.urlopen(f"http://127.0.0.1:{orch.metrics.port}/metrics", timeout=5).read().decode()
    exported = {(s.labels["queue"], s.labels["reason"]): s.value
                for family in text_string_to_metric_families(text) if family.name == "peirce_rejected_results"
                for s in family.samples if s.name == "peirce_rejected_results_total"}
    assert exported == {k: float(v) for k, v in orch.planner.rejected.items()}
    assert {r for q, r in exported if q == queue} >= {"empty", "depth", "type", "group", "malformed"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=64), max_size=5), to_reward=st.booleans())
def test_random_frames_never_escape_the_handlers(orch, frames, to_reward):
    phase = Phase.REWARD if to_reward else Phase.ROLLOUT
    gid = _live(orch, phase)
    before = _rejected(orch)
    (orch.on_reward_result if to_reward else orch.on_rollout_result)(gid, frames)
    assert _rejected(orch) == before + 1 and gid not in orch.planner.groups


def test_honest_results_still_flow(orch):
    gid = _live(orch, Phase.ROLLOUT)
    msg, before = orch.planner.groups[gid].msg, _rejected(orch)
    samples = _samples(msg)
    orch.on_rollout_result(gid, _wire(samples))
    assert orch.planner.groups[gid].phase is Phase.REWARD and orch.reward_dispatch.pending[-1][0] == gid
    scored = [ScoredSample(sample=s, reward=float(i), correct=bool(i), format_ok=True) for i, s in enumerate(samples)]
    orch.on_reward_result(gid, _wire(scored))
    assert orch.planner.groups[gid].phase is Phase.READY and _rejected(orch) == before


def test_checkpoint_state_keeps_its_keys_and_resumes_in_flight_tasks_first(tmp_path):
    """The driver's checkpoint dict has exactly the keys resume has always read; a driver
    restored from it regenerates the in-flight tasks before anything new."""
    first = _driver(tmp_path / "run")
    try:
        first._carry_out(first.planner.admit(first.source))
        in_flight = [g.msg.task.id for g in first.planner.groups.values()]
        state = msgspec.json.decode(msgspec.json.encode(first._state(first.version)))
    finally:
        close_driver(first)
    assert set(state) == {"step", "seq", "policy_version", "source", "staleness", "in_flight", "health"}
    assert in_flight and [t["id"] for t in state["in_flight"]] == in_flight
    second = _driver(tmp_path / "run", restored=state)
    try:
        assert second.step == 0 and second.planner.seq == len(in_flight) and second.planner.in_flight == 0
        submits = second.planner.admit(second.source)
        assert [s.messages[0].task.id for s in submits][: len(in_flight)] == in_flight
        assert submits[0].gid == f"g{len(in_flight):08d}"
    finally:
        close_driver(second)
