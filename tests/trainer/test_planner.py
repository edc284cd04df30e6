"""The group planner without Ray: admission under the staleness bound, retries and drops,
dynamic sampling, oldest-first batches, hostile results, checkpoints, SFT-interleaved versions.

Results go through the same bytes the workers send (`pack_messages`) and the same decode
the driver uses (`read_result`). The curriculum is a list (`ListFeed`), the one stand-in:
TaskSource needs a full TrainConfig and adds nothing the planner decides on.
"""

from __future__ import annotations

import json
import random

import msgspec
import numpy as np
import pytest

from peirce.seeding import group_seed
from peirce.tasks.base import Task
from peirce.testing import ListFeed
from peirce.trainer.planner import (MAX_ATTEMPTS, Accepted, Delivered, Drop, Filtered, GroupPlanner, Ignored,
                                    Malformed, Phase, PlanConfig, Rejected, Retry, Submit, WorkerError,
                                    has_signal, read_result)
from peirce.transport.frames import FrameError
from peirce.transport.groups import fault_payload, pack_messages
from peirce.transport.wire import MAX_FAULT_DETAIL, RequestSampling, RolloutSample, ScoredSample, TaskMsg, WorkerFault


def _task(i: int) -> Task:
    return Task(id=f"t{i:04d}", family="uppercase", level=1, split="train", puzzle={"i": i}, puzzle_text=f"p{i}",
                solution_text="X")


def _planner(s: int = 0, b: int = 2, n: int = 2, dynamic: bool = False) -> GroupPlanner:
    return GroupPlanner(PlanConfig(max_staleness=s, prompts_per_step=b, n_samples=n, dynamic_sampling=dynamic,
                                   sampling=RequestSampling(temperature=1.0)))


def _samples(msg: TaskMsg, version: int | None = None, **over) -> list[RolloutSample]:
    v = msg.policy_version_at_dispatch if version is None else version
    return [RolloutSample(**{"task_id": msg.task.id, "family": msg.task.family, "level": msg.task.level,
                             "group_id": msg.group_id, "sample_index": i, "prompt_token_ids": np.arange(3),
                             "response_token_ids": np.arange(2), "response_logprobs": np.zeros(2, np.float32),
                             "policy_version": v, **over})
            for i in range(msg.n_samples)]


def _fault(reason: str, detail: str = "") -> list:
    """A worker's refusal, framed as the rollout and reward loops send it."""
    return fault_payload(FrameError(reason, detail))


def _wire(messages) -> list[bytes]:
    return [bytes(memoryview(f)) for f in pack_messages(list(messages))]


def _scored(samples: list[RolloutSample], rewards: list[float]) -> list[ScoredSample]:
    return [ScoredSample(sample=s, reward=r, correct=r > 0, format_ok=True) for s, r in zip(samples, rewards)]


def _complete(p: GroupPlanner, gid: str, rewards: list[float] | None = None) -> list:
    """Run a ROLLOUT-phase group through honest rollout and reward results."""
    msg = p.groups[gid].msg
    samples = _samples(msg)
    out = p.on_rollout_result(gid, read_result(_wire(samples), RolloutSample))
    assert isinstance(out[0], Submit) and out[0].queue == "reward" and out[0].messages[0] == msg
    rewards = rewards or [float(i) for i in range(msg.n_samples)]
    return p.on_reward_result(gid, read_result(_wire(_scored(samples, rewards)), ScoredSample))


def test_admission_respects_the_staleness_bound():
    p, feed = _planner(s=0, b=2), ListFeed(20)
    first = p.admit(feed)
    assert [(d.queue, d.gid) for d in first] == [("rollout", "g00000000"), ("rollout", "g00000001")]
    assert first[0].messages[0].policy_version_at_dispatch == 0 and first[0].messages[0].n_samples == 2
    assert p.admit(feed) == []  # s = 0: nothing more until the batch trains
    for d in first:
        assert _complete(p, d.gid) == [Accepted(d.gid)]
    batch, _ = p.next_batch(finishing=False)
    assert len(batch) == 2 and p.admit(feed) == []  # consumed, but the version has not moved
    p.on_trained(batch, 1)
    assert [d.messages[0].policy_version_at_dispatch for d in p.admit(feed)] == [1, 1]
    wide = _planner(s=2, b=2)
    assert len(wide.admit(ListFeed(20))) == (2 + 1) * 2


def test_worker_errors_retry_up_to_max_attempts_then_drop_with_reason():
    p = _planner(s=0, b=1)
    (sub,) = p.admit(ListFeed(5))
    gid, decisions = sub.gid, []
    for attempt in range(1, MAX_ATTEMPTS):
        (d,) = p.on_rollout_result(gid, read_result(_fault("unservable"), RolloutSample))
        assert isinstance(d, Retry) and d.old_gid == gid and "unservable" in d.why
        assert d.submit.gid == f"{gid}r{attempt}" and d.submit.messages[0].attempt == attempt  # g..r1, g..r1r2
        assert d.submit.messages[0].task == sub.messages[0].task
        gid = d.submit.gid
        decisions.append(d)
    (drop,) = p.on_rollout_result(gid, read_result(_fault("version"), RolloutSample))
    assert isinstance(drop, Drop) and drop.kind == "failed" and drop.task_id == "t0000" and "version" in drop.why
    assert p.failed_groups == 1 and p.in_flight == 0 and not p.rejected  # worker errors are not malformed
    assert p.staleness.counts()["running"] == 0 and p.staleness.counts()["rejected_total"] == 1


def test_reward_failure_sends_the_group_back_to_rollout():
    p = _planner(s=0, b=1)
    (sub,) = p.admit(ListFeed(5))
    p.on_rollout_result(sub.gid, read_result(_wire(_samples(sub.messages[0])), RolloutSample))
    (d,) = p.on_reward_result(sub.gid, read_result(_fault("unservable"), ScoredSample))
    assert isinstance(d, Retry) and d.submit.queue == "rollout"
    assert p.groups[d.submit.gid].phase is Phase.ROLLOUT and sub.gid not in p.groups


def test_dynamic_sampling_drops_uniform_groups_only():
    p = _planner(s=1, b=2, n=3, dynamic=True)
    subs = p.admit(ListFeed(10))
    assert _complete(p, subs[0].gid, [1.0, 1.0, 1.0]) == [Filtered(subs[0].gid, subs[0].messages[0].task.id)]
    assert _complete(p, subs[1].gid, [0.0, 0.0, 0.0]) == [Filtered(subs[1].gid, subs[1].messages[0].task.id)]
    assert _complete(p, subs[2].gid, [0.0, 1.0, 1.0]) == [Accepted(subs[2].gid)]
    assert p.dropped_groups == 2 and list(p.ready) == [subs[2].gid]
    assert p.staleness.counts()["rejected_total"] == 2  # their capacity came back
    off = _planner(s=0, b=1, n=3, dynamic=False)
    (sub,) = off.admit(ListFeed(2))
    assert _complete(off, sub.gid, [1.0, 1.0, 1.0]) == [Accepted(sub.gid)]


@pytest.mark.parametrize("seed", range(5))
def test_has_signal_is_the_learner_filter(seed):
    rng = random.Random(seed)
    for _ in range(50):
        rewards = [rng.choice([0.0, 0.5, 1.0, -3.0]) for _ in range(rng.randint(1, 5))]
        s = _samples(TaskMsg(task=_task(0), group_id="g", n_samples=len(rewards)))
        assert has_signal(_scored(s, rewards)) == (len(set(rewards)) > 1), rewards


def test_batches_take_the_oldest_groups_first():
    p, feed = _planner(s=2, b=1), ListFeed(10)
    g0, g1, _g2 = (d.gid for d in p.admit(feed))  # capacity (2 + 0 + 1) * 1 at version 0
    _complete(p, g0)
    batch, _ = p.next_batch(finishing=False)
    assert [g[0].sample.group_id for g in batch] == [g0]
    p.on_trained(batch, 1)
    (g3,) = (d.gid for d in p.admit(feed))
    assert p.groups[g3].msg.policy_version_at_dispatch == 1
    _complete(p, g3)
    _complete(p, g1)  # accepted after g3, but admitted earlier
    assert list(p.ready) == [g3, g1]
    batch, _ = p.next_batch(finishing=False)
    assert [g[0].sample.group_id for g in batch] == [g1]
    assert p.groups[g1].phase is Phase.TRAINING and list(p.ready) == [g3]


def test_last_partial_batch_only_when_finishing_and_all_ready():
    p = _planner(s=0, b=2)
    (a,) = p.admit(ListFeed(1))
    _complete(p, a.gid)
    assert p.next_batch(finishing=False)[0] == []
    batch, _ = p.next_batch(finishing=True)
    assert [g[0].sample.group_id for g in batch] == [a.gid]


def test_results_for_unknown_dropped_or_other_phase_groups_are_ignored():
    p = _planner(s=0, b=1)
    (sub,) = p.admit(ListFeed(3))
    samples = _samples(sub.messages[0])
    good = read_result(_wire(samples), RolloutSample)
    assert p.on_rollout_result("g99999999", good) == [Ignored("g99999999", "rollout")]
    scored = read_result(_wire(_scored(samples, [0.0, 1.0])), ScoredSample)
    assert p.on_reward_result(sub.gid, scored) == [Ignored(sub.gid, "reward")]  # still in ROLLOUT
    p.on_rollout_result(sub.gid, good)
    assert p.on_rollout_result(sub.gid, good) == [Ignored(sub.gid, "rollout")]  # a late duplicate
    (retry,) = p.on_reward_result(sub.gid, read_result(_fault("x"), ScoredSample))
    assert p.on_reward_result(sub.gid, scored) == [Ignored(sub.gid, "reward")]  # retried under a new id
    assert not p.rejected and p.in_flight == 1 and retry.submit.gid in p.groups


def _hostile_rollouts(msg: TaskMsg) -> dict[str, list]:
    honest = _samples(msg)
    return {
        "empty": [],
        "random bytes": [b"\x93\xff\x00garbage", b"\x01\x02"],
        "not msgpack counts": [b"\xc1"],
        "old error marker": [b"ERR", b"unservable"],
        "fault without reason": _wire([WorkerFault(reason="")]),
        "fault reason not a counter key": _wire([WorkerFault(reason="Bad Reason\n\x1b[31m")]),
        "fault reason huge": _wire([WorkerFault(reason="r" * 10_000)]),
        "fault detail huge": _wire([WorkerFault(reason="x", detail="d" * 100_000)]),
        "fault beside samples": _wire([WorkerFault(reason="x"), *honest]),
        "two faults": _wire([WorkerFault(reason="x"), WorkerFault(reason="y")]),
        "wrong type": _wire([msg]),
        "another group": _wire(_samples(msg, group_id="g77777777")),
        "another task": _wire(_samples(msg, task_id="t9999")),
        "too few samples": _wire(honest[:1]),
        "too many samples": _wire([*honest, honest[0]]),
        "duplicate indices": _wire([honest[0], honest[0]]),
        "no samples": _wire([]),
        "deep nesting": [msgspec.msgpack.encode([1]), b"\x91" * 100_000 + b"\xc0"],
        "frame not a buffer": [None, 3],
    }


@pytest.mark.parametrize("case", list(_hostile_rollouts(TaskMsg(task=_task(0), group_id="g", n_samples=2))))
def test_malformed_rollout_results_are_counted_and_retried(case):
    p = _planner(s=0, b=1)
    (sub,) = p.admit(ListFeed(3))
    result = read_result(_hostile_rollouts(sub.messages[0])[case], RolloutSample)
    assert isinstance(result, (Malformed, Delivered)), result  # decodable ones fail the planner's group check
    rejected, retry = p.on_rollout_result(sub.gid, result)
    assert isinstance(rejected, Rejected) and rejected.queue == "rollout" and rejected.gid == sub.gid
    assert isinstance(retry, Retry) and retry.submit.gid in p.groups
    assert sum(p.rejected.values()) == 1 and p.rejected[("rollout", rejected.reason)] == 1
    expected = "group" if isinstance(result, Delivered) else result.reason
    assert rejected.reason == expected


def test_malformed_reward_results_are_counted_and_retried():
    p = _planner(s=0, b=1)
    (sub,) = p.admit(ListFeed(3))
    samples = _samples(sub.messages[0])
    p.on_rollout_result(sub.gid, read_result(_wire(samples), RolloutSample))
    result = read_result(_wire(samples), ScoredSample)  # unscored samples back from a reward worker
    assert result == Malformed("type", "expected only ScoredSample (or one WorkerFault), got ['RolloutSample']")
    (rejected, retry) = p.on_reward_result(sub.gid, result)
    assert rejected.reason == "type" and isinstance(retry, Retry)
    gid = retry.submit.gid
    p.on_rollout_result(gid, read_result(_wire(_samples(retry.submit.messages[0])), RolloutSample))
    foreign = _scored(_samples(sub.messages[0]), [0.0, 1.0])  # scored, but for the old group id
    (rejected, retry) = p.on_reward_result(gid, read_result(_wire(foreign), ScoredSample))
    assert rejected.reason == "group" and "group_id" in rejected.detail
    assert p.rejected == {("reward", "type"): 1, ("reward", "group"): 1}


def test_read_result_accepts_honest_answers():
    msg = TaskMsg(task=_task(0), group_id="g1", n_samples=2)
    got = read_result(_wire(_samples(msg)), RolloutSample)
    assert isinstance(got, Delivered) and [s.sample_index for s in got.messages] == [0, 1]
    assert read_result(_fault("unservable", "task 'x': no family"), RolloutSample) == WorkerError(
        "unservable", "task 'x': no family")
    long = read_result(fault_payload(FrameError("version", "v" * 5000)), RolloutSample)
    assert isinstance(long, WorkerError) and len(long.detail) == MAX_FAULT_DETAIL  # cut by the worker, not refused


def test_state_dict_round_trip_keeps_the_checkpoint_keys():
    p, feed = _planner(s=1, b=2), ListFeed(20)
    subs = p.admit(feed)
    _complete(p, subs[0].gid)
    _complete(p, subs[1].gid)
    p.on_rollout_result(subs[2].gid, read_result(_fault("x"), RolloutSample))  # a retried group
    state = json.loads(json.dumps(p.state_dict()))  # checkpoints are JSON-friendly
    assert set(state) == {"seq", "staleness", "in_flight"}
    assert state["seq"] == 4 and len(state["in_flight"]) == 4
    fresh = _planner(s=1, b=2)
    tasks = fresh.load_state_dict({**state, "step": 0, "policy_version": 0})
    assert [t.id for t in tasks] == [t["id"] for t in state["in_flight"]]
    assert sorted(t.id for t in tasks) == [f"t{i:04d}" for i in range(4)]
    assert fresh.seq == 4 and fresh.in_flight == 0
    counts = fresh.staleness.counts()
    assert counts["running"] == counts["accepted"] == 0  # regenerated, so their capacity returns
    assert len(fresh.admit(ListFeed(20))) == (1 + 1) * 2
    assert fresh.groups["g00000004"]  # ids continue after the saved sequence


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sft_every", [0, 3])
def test_interleaved_version_bumps_never_break_the_staleness_bound(seed, sft_every):
    """Random completion order; every `sft_every`-th step the policy version also moves
    without an RL batch (an SFT step). Every trained group stays within max_staleness
    policy versions, and bumps do not inflate admission (at most one window of stale drops each)."""
    rng = random.Random(seed)
    s, b = rng.choice([0, 1, 2]), rng.choice([1, 2, 3])
    p, feed = _planner(s=s, b=b, n=2), ListFeed(400)
    trained, bumps, steps = [], 0, 0
    while steps < 30:
        p.admit(feed)
        assert p.in_flight <= (s + 1) * b + b  # the window, plus the batch training now
        for gid in [g for g, grp in p.groups.items() if grp.phase is Phase.ROLLOUT]:
            if rng.random() < 0.5:
                _complete(p, gid)
        batch, _ = p.next_batch(finishing=False)
        if not batch:
            continue
        trained += [p.version - p.groups[g[0].sample.group_id].msg.policy_version_at_dispatch for g in batch]
        p.on_trained(batch, p.version + 1)
        steps += 1
        if sft_every and steps % sft_every == 0:
            p.advance_version(p.version + 1)
            bumps += 1
    assert max(trained) <= s, trained
    if sft_every:
        assert p.version == 30 + bumps and p.stale_groups <= bumps * (s + 1) * b
    else:
        assert p.stale_groups == 0  # RL-only: the controller alone keeps the bound, nothing is wasted


def test_advance_version_refuses_to_go_back():
    p = _planner()
    p.advance_version(3)
    with pytest.raises(ValueError, match="policy_version: 2 < current 3"):
        p.advance_version(2)
    assert p.state_dict()["idle_versions"] == 3


def test_each_group_samples_from_a_seed_fixed_by_its_task_not_by_dispatch_order():
    """Seeds come from (run seed, task id, phase): a retry, a resumed run, a rerun and another
    admission order give a task the same seed; different tasks and run seeds differ."""
    def seeds(planner: GroupPlanner, feed: ListFeed) -> dict[str, int]:
        return {sub.messages[0].task.id: sub.messages[0].sampling.seed for sub in planner.admit(feed)}

    cfg = dict(max_staleness=0, prompts_per_step=4, n_samples=2, sampling=RequestSampling(temperature=1.0))
    first = seeds(GroupPlanner(PlanConfig(**cfg, seed=3)), ListFeed(4))
    backwards = ListFeed(4)
    backwards.tasks.reverse()
    assert seeds(GroupPlanner(PlanConfig(**cfg, seed=3)), backwards) == first
    assert first == {t: group_seed(3, t, "solve") for t in first} and len(set(first.values())) == 4
    assert all(0 <= v < 2**62 for v in first.values())
    other = seeds(GroupPlanner(PlanConfig(**cfg, seed=4)), ListFeed(4))
    assert not set(other.values()) & set(first.values())
    p = GroupPlanner(PlanConfig(**cfg, seed=3))
    (sub, *_) = p.admit(ListFeed(4))
    (retry,) = p.on_rollout_result(sub.gid, read_result(_fault("unservable"), RolloutSample))
    assert retry.submit.messages[0].sampling.seed == sub.messages[0].sampling.seed
    unseeded = GroupPlanner(PlanConfig(**cfg, seed=3, seeded=False))
    assert set(seeds(unseeded, ListFeed(4)).values()) == {None}


def test_group_seeds_are_the_same_in_another_process():
    """Not Python's salted hash(): a resumed run in a new process must derive the same seeds."""
    import subprocess
    import sys

    code = "from peirce.seeding import group_seed; print(group_seed(3, 't0001', 'meta'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout
    assert int(out) == group_seed(3, "t0001", "meta")


def test_a_batch_keeps_admission_order_whatever_order_results_arrived_in():
    """Same groups, same batch, same sums: a rerun or a resumed run trains identical batches."""
    batches = []
    for arrival in ([0, 1, 2], [2, 0, 1]):
        p = _planner(s=0, b=3)
        subs = p.admit(ListFeed(3))
        for i in arrival:
            _complete(p, subs[i].gid)
        batch, _ = p.next_batch(False)
        batches.append([g[0].sample.group_id for g in batch])
    assert batches[0] == batches[1] == ["g00000000", "g00000001", "g00000002"]


def test_staleness_is_bounded_by_the_oldest_part_of_a_partial_rollout():
    """A sample continued under newer weights (version_segments) is as old as its first
    token: a group whose newest tokens are fresh is still dropped once its oldest are stale."""
    p, feed = _planner(s=1, b=1, n=2), ListFeed(4)
    p.admit(feed)
    gid = next(iter(p.groups))
    msg = p.groups[gid].msg
    partial = _samples(msg, version=0, response_token_ids=np.arange(4), response_logprobs=np.zeros(4, np.float32),
                       version_segments=[(0, 0), (2, 1)])
    p.on_rollout_result(gid, read_result(_wire(partial), RolloutSample))
    p.on_reward_result(gid, read_result(_wire(_scored(partial, [0.0, 1.0])), ScoredSample))
    p.advance_version(2)  # oldest tokens 2 versions old > max_staleness 1, newest 1
    batch, drops = p.next_batch(finishing=False)
    assert batch == [] and [d.kind for d in drops] == ["stale"] and "oldest policy version 0" in drops[0].why
    # a sample older than its group's admission (a worker that did not wait) is bounded by its own version
    p2, feed2 = _planner(s=1, b=1, n=2), ListFeed(4)
    p2.advance_version(1)
    p2.admit(feed2)
    gid2 = next(iter(p2.groups))
    old = _samples(p2.groups[gid2].msg, version=0)
    p2.on_rollout_result(gid2, read_result(_wire(old), RolloutSample))
    p2.on_reward_result(gid2, read_result(_wire(_scored(old, [0.0, 1.0])), ScoredSample))
    assert p2._oldest_version(p2.groups[gid2]) == 0
