"""The reward worker's loop: take rollout groups, verify, return scored samples.

Pure of Ray: the actor in peirce.actors.reward_worker only starts this in a thread.
Nothing an item carries can stop the loop. A payload that fails to decode (reason from
FrameError) or that decodes but cannot be scored (`unservable`: no reward for its task,
an unencodable verifier result) is counted in `rejects`, logged, and answered with
a `WorkerFault` (reason, detail) so the orchestrator can retry or drop the group. A verifier
that raises or returns garbage on one sample scores that sample as a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from peirce.rewards.maa import MaaRewardScheme, maa_reward
from peirce.rewards.registry import RewardFn, RewardResult, get_reward
from peirce.tasks.base import Task
from peirce.transport.dispatch import WorkClient
from peirce.transport.frames import FrameError, RejectCounter
from peirce.transport.groups import fault_payload, pack_messages, unpack_messages
from peirce.transport.security import RunKeys
from peirce.transport.wire import RolloutSample, ScoredSample, TaskMsg

log = logging.getLogger(__name__)

MAA_TASKS = frozenset({"deduction", "induction", "abduction"})


class RewardResolver:
    """Reward function per task family: `name="auto"` picks maa for the meta-ability
    tasks and the family's own reward (math, code, science) otherwise."""

    def __init__(self, name: str = "auto", scheme: MaaRewardScheme | None = None) -> None:
        self.name = name
        self._maa = maa_reward(scheme or MaaRewardScheme())
        self._cache: dict[str, RewardFn] = {}

    def __call__(self, family: str) -> RewardFn:
        key = family if self.name == "auto" else self.name
        if key in MAA_TASKS or key == "maa":
            return self._maa
        if key not in self._cache:
            self._cache[key] = get_reward(key)
        return self._cache[key]


def score_group(task: Task, samples: list[RolloutSample], resolve: RewardResolver) -> list[ScoredSample]:
    """Score each sample; raises what `resolve` raises (e.g. UnknownRewardError) when no
    reward fits the task. Verifier faults are per sample (see `_score_one`)."""
    fn = resolve(task.family)
    return [_score_one(fn, task, s) for s in samples]


def verifier_fault_reward(family: str) -> float:
    """What a sample scores when its verifier raises (a bug, NaN, a wrong type): the task's
    lowest reward (MAA: -3.0, the malformed-answer score; others: 0.0). One rule for
    training and evaluation, so a verifier bug moves neither the policy nor a report."""
    return -3.0 if family in MAA_TASKS else 0.0


def _score_one(fn: RewardFn, task: Task, s: RolloutSample) -> ScoredSample:
    try:
        r: RewardResult = fn(task, s.prefill + s.completion)
        return ScoredSample(sample=s, reward=float(r.reward), correct=bool(r.correct), format_ok=bool(r.format_ok),
                            reward_details={"answer": None if r.answer is None else str(r.answer)})
    except Exception as exc:  # a verifier bug (a raise, NaN, a wrong type) must not take the worker down
        log.exception("reward %s failed on %s", task.family, task.id)
        return ScoredSample(sample=s, reward=verifier_fault_reward(task.family), correct=False,
                            format_ok=False, reward_details={"answer": f"verifier error: {exc!r:.200}"})


def _group(payload: list) -> tuple[TaskMsg, list[RolloutSample]]:
    msgs = unpack_messages(payload)
    if not msgs:
        raise FrameError("empty", "reward payload holds no messages")
    task_msg, samples = msgs[0], msgs[1:]
    if not isinstance(task_msg, TaskMsg) or not all(isinstance(s, RolloutSample) for s in samples):
        raise FrameError("type", "reward payload must be [TaskMsg, RolloutSample...]")
    return task_msg, samples


class RewardLoop:
    def __init__(self, endpoint: str, resolve: RewardResolver, credit: int = 4,
                 on_scored: Callable[[list[ScoredSample]], None] | None = None, worker_id: str | None = None,
                 keys: RunKeys | None = None) -> None:
        self.rejects = RejectCounter()
        self.client = WorkClient(endpoint, identity=worker_id, rejected=self.rejects, keys=keys)
        self.resolve = resolve
        self.credit = credit
        self.on_scored = on_scored
        self.stop_event = threading.Event()
        self.scored_groups = 0

    def run(self) -> None:
        self.client.request(self.credit)
        while not self.stop_event.is_set():
            for item_id, payload in self.client.receive(50):
                self.client.result(item_id, self._handle(item_id, payload))
                self.client.request(1)
        self.client.bye()  # items we never received stay with the dispatcher
        self.client.close()

    def _handle(self, item_id: str, payload: list) -> list:
        """Frames answering one item: the scored group, or a WorkerFault."""
        t0 = time.perf_counter()
        try:
            task_msg, samples = _group(payload)
            scored, frames = self._score(task_msg, samples)
        except FrameError as err:
            self.rejects.record(err, where=f"reward item {item_id}")
            return fault_payload(err)
        self.scored_groups += 1
        if self.on_scored:
            try:
                self.on_scored(scored)
            except Exception:  # metrics must not cost a scored group
                log.exception("on_scored callback failed for %s", item_id)
        log.debug("scored %s (%d samples) in %.3f s", item_id, len(scored), time.perf_counter() - t0)
        return frames

    def _score(self, task_msg: TaskMsg, samples: list[RolloutSample]) -> tuple[list[ScoredSample], list]:
        """(scored samples, their frames); FrameError("unservable") if the item cannot be scored."""
        task = task_msg.task
        try:
            scored = score_group(task, samples, self.resolve)
            return scored, pack_messages(scored)
        except Exception as exc:
            raise FrameError("unservable", f"task {task.family!r} ({task.id}): {exc!r:.200}") from None
