"""The real Orchestrator on an injected topology with no Ray actors: real loopback
dispatchers, idle pools, no learner. For fast tests of the driver's handlers and resume."""

from __future__ import annotations

from peirce.config import TrainConfig
from peirce.trainer.loggers import close_all
from peirce.trainer.orchestrator import Orchestrator
from peirce.trainer.topology import Topology
from peirce.transport.dispatch import WorkDispatcher


class IdlePool:
    """Stands in for a WorkerPool (no Ray actors in a fast test): no workers, nothing to reap."""

    size = deaths = oom_deaths = 0
    workers: dict = {}

    def reap(self) -> None: ...
    def resize(self, n: int) -> None: ...
    def shutdown(self) -> None: ...


def actorless_driver(cfg: TrainConfig, restored: dict | None = None) -> Orchestrator:
    topo = Topology(learner=None, rollout_dispatch=WorkDispatcher("127.0.0.1"),
                    reward_dispatch=WorkDispatcher("127.0.0.1"), rollout_pool=IdlePool(), reward_pool=IdlePool(),
                    restored=restored)
    return Orchestrator(cfg, resume=restored is not None, progress=False, topology=topo)


def close_driver(o: Orchestrator) -> None:
    """What Orchestrator.shutdown does, minus the actors this topology does not have."""
    o.control.close()
    o.rollout_dispatch.close()
    o.reward_dispatch.close()
    o.metrics.withdraw()
    close_all(o.loggers)
