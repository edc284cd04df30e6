"""Reward worker actor: a thread running `RewardLoop` against the reward dispatcher."""

from __future__ import annotations

import os

import ray

from peirce.actors.common import LoopThread, actor_setup
from peirce.rewards.maa import MaaRewardScheme
from peirce.rewards.worker import RewardLoop, RewardResolver
from peirce.transport.network import bind_host
from peirce.transport.security import RunKeys


class RewardWorker:
    def __init__(self, endpoint: str, run: str, worker_id: str, reward_name: str, scheme: dict,
                 keys: RunKeys | None = None, metrics_host: str = "127.0.0.1") -> None:
        self.metrics = actor_setup(run, worker_id, bind_host(metrics_host))
        resolver = RewardResolver(reward_name, MaaRewardScheme(**scheme))
        self.loop = RewardLoop(endpoint, resolver, on_scored=self._count, worker_id=worker_id, keys=keys)
        self.loop.rejects.hooks.append(lambda reason, _d: self.metrics.inc("peirce_rejected_frames_total", reason=reason))
        self.thread = LoopThread(self.loop.run, "reward-loop")

    def _count(self, scored) -> None:
        for s in scored:
            labels = {"task": s.sample.family, "level": str(s.sample.level)}
            self.metrics.add_reward(s.reward, **labels)

    def drain(self, timeout_s: float = 60.0) -> int:
        """Stop taking work, hand back what is unstarted, exit the loop."""
        self.loop.stop_event.set()
        self.thread.join(timeout_s)
        self.metrics.withdraw()
        return self.loop.scored_groups

    def alive(self) -> bool:
        return self.thread.alive()

    def pid(self) -> int:
        return os.getpid()


RewardWorkerActor = ray.remote(RewardWorker)
