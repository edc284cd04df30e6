"""The reward worker's loop: take rollout groups, verify, return scored samples.

Pure of Ray: the actor in peirce.actors.reward_worker only starts this in a thread.
A payload that fails to decode, or a verifier that raises, never kills the loop: the
group comes back with an error marker so the orchestrator can count and re-dispatch it.
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
from peirce.transport.groups import pack_messages, unpack_messages
from peirce.transport.wire import RolloutSample, ScoredSample, TaskMsg

log = logging.getLogger(__name__)

MAA_TASKS = frozenset({"deduction", "induction", "abduction"})
ERROR_MARKER = b"ERR"


class RewardResolver:
    """Reward function per task family: `name="auto"` picks maa for the meta-ability
    tasks and the family's own reward (math, code, science) otherwise."""

    def __init__(self, name: str = "auto", scheme: MaaRewardScheme | None = None) -> None:
        self.name = name
        self._maa = maa_reward(scheme or MaaRewardScheme())
        self._cache: dict[str, RewardFn] = {}

    def __call__(self, task_name: str) -> RewardFn:
        key = task_name if self.name == "auto" else self.name
        if key in MAA_TASKS or key == "maa":
            return self._maa
        if key not in self._cache:
            self._cache[key] = get_reward(key)
        return self._cache[key]


def score_group(task: Task, samples: list[RolloutSample], resolve: RewardResolver) -> list[ScoredSample]:
    fn = resolve(task.task)
    out = []
    for s in samples:
        try:
            r: RewardResult = fn(task, s.prefill + s.completion)
        except Exception as exc:  # a verifier bug must not take the worker down; score as failure
            log.exception("reward %s raised on %s", task.task, task.id)
            r = RewardResult(reward=-3.0 if task.task in MAA_TASKS else 0.0, format_ok=False, correct=None,
                             answer=f"verifier error: {exc}")
        out.append(ScoredSample(sample=s, reward=float(r.reward), correct=bool(r.correct), format_ok=r.format_ok,
                                reward_details={"answer": r.answer}))
    return out


class RewardLoop:
    def __init__(self, endpoint: str, resolve: RewardResolver, credit: int = 4,
                 on_scored: Callable[[list[ScoredSample]], None] | None = None, worker_id: str | None = None) -> None:
        self.client = WorkClient(endpoint, identity=worker_id)
        self.resolve = resolve
        self.credit = credit
        self.rejects = RejectCounter()
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
        t0 = time.perf_counter()
        try:
            msgs = unpack_messages(payload)
            task_msg, samples = msgs[0], msgs[1:]
            if not isinstance(task_msg, TaskMsg) or not all(isinstance(s, RolloutSample) for s in samples):
                raise FrameError("type", "reward payload must be [TaskMsg, RolloutSample...]")
        except FrameError as err:
            self.rejects.record(err, where=f"reward item {item_id}")
            return [ERROR_MARKER, err.reason.encode()]
        scored = score_group(task_msg.task, samples, self.resolve)
        self.scored_groups += 1
        if self.on_scored:
            self.on_scored(scored)
        log.debug("scored %s (%d samples) in %.3f s", item_id, len(scored), time.perf_counter() - t0)
        return pack_messages(scored)
