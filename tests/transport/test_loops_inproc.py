"""The worker loops over ZeroMQ's in-process transport: the dispatch protocol of
peirce.transport.dispatch unchanged, the peers threads of one process.

RolloutLoop (in ThreadRolloutWorker) and RewardLoop (in the real RewardWorker class) serve
items from a real WorkDispatcher bound to `inproc_endpoint()`, weights come from a real
WeightPublisher; only vLLM stands in (StandInEngine, tests/inproc_harness.py: far too
slow to start here). Checked: items served (a new weight version loaded first when the
task needs it), a bad payload answered with an error while the loop keeps serving, and
BYE handing back the items a stopping worker held but never started.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
import torch

from inproc_harness import StandInEngine, ThreadRolloutWorker, pump_until, task_items
from peirce.actors.reward_worker import RewardWorker
from peirce.rewards.registry import RewardResult, register_reward
from peirce.tasks.base import Task
from peirce.tasks.dataset import generate_dataset
from peirce.trainer.planner import Delivered, WorkerError, read_result
from peirce.transport.dispatch import WorkDispatcher, inproc_endpoint
from peirce.transport.groups import pack_messages
from peirce.transport.weight_sync import WeightPublisher
from peirce.transport.wire import RolloutSample, ScoredSample, TaskMsg

pytestmark = pytest.mark.timeout(60)

HELD_REWARD = "test-inproc-held"  # a verifier that waits for the test, registered for real
_scoring, _release = threading.Event(), threading.Event()
_release.set()


@register_reward(HELD_REWARD)
def _held_reward(task: Task, assistant_turn: str) -> RewardResult:
    _scoring.set()
    _release.wait(20)
    return RewardResult(reward=float(assistant_turn.isupper()), format_ok=True, correct=assistant_turn.isupper())


@pytest.fixture()
def dispatcher():
    d = WorkDispatcher(endpoint=inproc_endpoint("test"))
    yield d
    d.close()


@pytest.fixture()
def publisher():
    pub = WeightPublisher(inproc_endpoint("weights"), ack_timeout=10.0)
    yield pub
    pub.close()


def _reward_items(n: int, completion: str = "ANSWER") -> dict[str, list[bytes]]:
    """`n` reward work items: a TaskMsg and its two samples, by item id."""
    out = {}
    for i, task in enumerate(generate_dataset("uppercase", 1, n, "train", seed=0)):
        msg = TaskMsg(task=task, group_id=f"r{i}", n_samples=2)
        samples = [RolloutSample(task_id=task.id, family=task.family, level=task.level, group_id=msg.group_id,
                                 sample_index=j, prompt_token_ids=np.arange(3), response_token_ids=np.arange(2),
                                 response_logprobs=np.zeros(2, np.float32), policy_version=0,
                                 completion=completion if j == 0 else completion.lower()) for j in range(2)]
        out[msg.group_id] = [bytes(memoryview(f)) for f in pack_messages([msg, *samples])]
    return out


def test_rollout_loop_serves_after_loading_the_version_a_task_needs(dispatcher, publisher):
    worker = ThreadRolloutWorker(StandInEngine(), dispatcher.endpoint, publisher.endpoint, "rollout-t",
                                 prompts_per_step=4)
    try:
        now = task_items(1, "now", n_samples=2)
        for item_id, payload in now.items():
            dispatcher.submit(item_id, payload)
        results = pump_until(dispatcher, lambda r: len(r) == 1)
        publisher.publish({"w": torch.full((4,), 1.0)}, 1)
        later = task_items(1, "later", n_samples=2, policy_version_at_dispatch=1)
        dispatcher.submit("garbage", [b"\xc1"])
        dispatcher.submit("not-a-task", _reward_items(1)["r0"])  # decodes, but is a reward item
        for item_id, payload in later.items():
            dispatcher.submit(item_id, payload)
        pump_until(dispatcher, lambda r: len(r) == 4, into=results)
        assert worker.alive() and worker.engine.loaded == [1]
        got = {k: read_result(v, RolloutSample) for k, v in results.items()}
        assert [type(got[k]) for k in ("garbage", "not-a-task")] == [WorkerError, WorkerError]
        assert (got["garbage"].reason, got["not-a-task"].reason) == ("malformed", "type")
        for item_id, version in (("now0", 0), ("later0", 1)):
            assert isinstance(got[item_id], Delivered)
            assert [(s.group_id, s.sample_index, s.policy_version) for s in got[item_id].messages] == [
                (item_id, 0, version), (item_id, 1, version)]
        assert worker.loop.rejects.as_dict() == {"malformed": 1, "type": 1} and worker.loop.generated_groups == 2
    finally:
        worker.drain()


def test_reward_loop_scores_and_answers_a_bad_item_with_an_error(dispatcher):
    worker = RewardWorker(dispatcher.endpoint, "inproc", "reward-t", "auto", {})
    try:
        items = {"bad": [b"\x93\x01"], **_reward_items(2)}
        for item_id, payload in items.items():
            dispatcher.submit(item_id, payload)
        results = pump_until(dispatcher, lambda r: len(r) == 3)
        assert worker.alive()
        got = {k: read_result(v, ScoredSample) for k, v in results.items()}
        assert isinstance(got["bad"], WorkerError)
        for gid in ("r0", "r1"):
            assert isinstance(got[gid], Delivered)
            assert [(s.sample.group_id, s.reward) for s in got[gid].messages] == [(gid, 1.0), (gid, 0.0)]
        assert worker.loop.scored_groups == 2 and worker.loop.rejects.total == 1
    finally:
        worker.drain()


def _bye_hands_back_held_items(d: WorkDispatcher, items: dict[str, list[bytes]], start: Callable[[str], object],
                               hold: Callable[[], None], busy: Callable[[], bool],
                               release: Callable[[object], None]) -> None:
    """The first item keeps worker A busy while the others reach it; A is told to stop:
    it returns the first, says BYE, and the rest go back to the queue for worker B."""
    hold()
    a = start("worker-a")
    first, *rest = items
    d.submit(first, items[first])
    pump_until(d, lambda _: busy())
    for item_id in rest:
        d.submit(item_id, items[item_id])
    pump_until(d, lambda _: len(d.workers[b"worker-a"].outstanding) == len(items))  # A holds all of them
    release(a)
    results = pump_until(d, lambda _: b"worker-a" not in d.workers)  # BYE
    assert list(results) == [first] and [i for i, _ in d.pending] == rest
    b = start("worker-b")
    try:
        pump_until(d, lambda r: len(r) == len(items), into=results)
    finally:
        release(b)
    assert sorted(results) == sorted(items) and d.in_flight() == 0 and d.rejected.total == 0


def test_bye_hands_back_what_a_stopping_rollout_worker_held(dispatcher, publisher):
    engines: dict[str, StandInEngine] = {}

    def start(wid: str) -> ThreadRolloutWorker:
        engines[wid] = StandInEngine()
        if wid == "worker-a":
            engines[wid].running.clear()
        return ThreadRolloutWorker(engines[wid], dispatcher.endpoint, publisher.endpoint, wid, prompts_per_step=4)

    def release(w: ThreadRolloutWorker) -> None:
        w.loop.stop_event.set()
        w.engine.running.set()
        w.drain()

    _bye_hands_back_held_items(dispatcher, task_items(3), start, hold=lambda: None,
                               busy=lambda: "worker-a" in engines and engines["worker-a"].busy.is_set(),
                               release=release)
    assert [r for r, _ in engines["worker-a"].served] == ["t0"]
    assert [r for r, _ in engines["worker-b"].served] == ["t1", "t2"]


def test_bye_hands_back_what_a_stopping_reward_worker_held(dispatcher):
    def hold() -> None:
        _scoring.clear()
        _release.clear()

    def release(w: RewardWorker) -> None:
        w.loop.stop_event.set()
        _release.set()
        w.drain()

    try:
        _bye_hands_back_held_items(dispatcher, _reward_items(3),
                                   lambda wid: RewardWorker(dispatcher.endpoint, "inproc", wid, HELD_REWARD, {}),
                                   hold=hold, busy=_scoring.is_set, release=release)
    finally:
        _release.set()
