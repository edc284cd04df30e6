"""The actors and sockets of one RL run: learner, rollout and reward pools, their dispatchers.

Built by one call (`build_topology`) so the driver loop never constructs actors itself,
and a test can hand the Orchestrator a Topology of its own (its `calls` say how its
actors are reached: Ray here, threads of the test process in tests/inproc_harness.py).
On resume the learner loads the checkpoint first: the rollout workers must start from
its weights and version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from peirce.actors.calls import RAY_CALLS, Calls
from peirce.actors.learner import LearnerActor
from peirce.actors.reward_worker import RewardWorkerActor
from peirce.actors.rollout_worker import RolloutWorkerActor
from peirce.actors.runtime import actor_log_options
from peirce.config import TrainConfig
from peirce.metrics import withdraw_target
from peirce.trainer.worker_pool import WorkerPool
from peirce.transport.dispatch import WorkDispatcher
from peirce.transport.network import bind_host, run_keys

log = logging.getLogger(__name__)

REWARD_SCHEME_KEYS = ("format_ok", "format_bad", "answer_correct", "answer_wrong", "answer_unparsable")


@dataclass
class Topology:
    learner: Any  # LearnerActor handle: train, save, load, close
    rollout_dispatch: WorkDispatcher
    reward_dispatch: WorkDispatcher
    rollout_pool: WorkerPool
    reward_pool: WorkerPool
    restored: dict[str, Any] | None = None  # the driver state the learner loaded from a checkpoint
    calls: Calls = RAY_CALLS  # how the learner (and the pools' workers) are reached

    def shutdown(self) -> None:
        self.rollout_pool.shutdown()
        self.reward_pool.shutdown()
        try:
            self.calls.get(self.calls.call(self.learner, "close"), timeout=30)
        except Exception:  # noqa: BLE001 - best effort on the way out
            log.warning("learner did not close cleanly", exc_info=True)
        self.calls.kill(self.learner)
        self.rollout_dispatch.close()
        self.reward_dispatch.close()


def resolve_model(path: str) -> Path:
    if path == "embedded":
        from peirce.model.embedded import prepare_embedded_model

        return prepare_embedded_model()
    if path == "tiny":
        from peirce.model.tiny import build_tiny_llama

        return build_tiny_llama()
    p = Path(path).expanduser()
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"model.path: {path!r} is not a Hugging Face folder (no config.json)")
    return p


def reward_scheme(cfg: TrainConfig) -> dict[str, float]:
    """The MAA reward scheme a reward worker is built with (RewardWorker's `scheme`)."""
    return {k: getattr(cfg.reward, k) for k in REWARD_SCHEME_KEYS}


def requeue_on_death(run: str, dispatcher: WorkDispatcher):
    """What to do when a pool buries a worker: re-queue its items now, drop its target."""
    def on_dead(worker_id: str) -> None:
        dispatcher.retire(worker_id)
        withdraw_target(run, worker_id)
    return on_dead


def build_topology(cfg: TrainConfig, run_root: Path, checkpoint: Path | None = None) -> Topology:
    """Start the learner (loading `checkpoint` if given), then both pools at the configured sizes."""
    cfg_dict = cfg.model_dump(mode="json", by_alias=True)
    host, keys = bind_host(cfg.transport.host), run_keys(cfg.transport)
    if keys is not None:
        log.info("run %s spans nodes: every ZeroMQ socket uses this run's CURVE keys", cfg.name)
    rollout_dispatch = WorkDispatcher(host, keys=keys)
    reward_dispatch = WorkDispatcher(host, keys=keys)
    worker_keys = keys.for_worker() if keys is not None else None
    model_dir = resolve_model(cfg.model.path)
    learner = LearnerActor.options(num_cpus=cfg.learner.num_cpus, num_gpus=cfg.learner.num_gpus,
                                   resources=cfg.learner.resources or None,
                                   **actor_log_options(run_root, "learner")).remote(
        str(model_dir), cfg_dict, cfg.name, keys)
    restored, start_version, engine_dir = None, 0, model_dir
    if checkpoint is not None:
        restored = ray.get(learner.load.remote(str(checkpoint)))
        start_version, engine_dir = int(restored["policy_version"]), checkpoint
    weight_endpoint = ray.get(learner.weight_endpoint.remote())
    rc = cfg.rollout
    rollout_pool = WorkerPool("rollout", on_dead=requeue_on_death(cfg.name, rollout_dispatch), spawn=lambda wid: (
        RolloutWorkerActor.options(num_cpus=rc.num_cpus, num_gpus=rc.num_gpus, resources=rc.resources or None,
                                   **actor_log_options(run_root, wid))
        .remote(str(engine_dir), cfg_dict, rollout_dispatch.endpoint, weight_endpoint, cfg.name, wid, start_version,
                worker_keys)))
    scheme = reward_scheme(cfg)
    reward_pool = WorkerPool("reward", on_dead=requeue_on_death(cfg.name, reward_dispatch), spawn=lambda wid: (
        RewardWorkerActor.options(num_cpus=0.25, resources=cfg.reward.resources or None,
                                  **actor_log_options(run_root, wid))
        .remote(reward_dispatch.endpoint, cfg.name, wid, cfg.reward.name, scheme, worker_keys, cfg.transport.host)))
    rollout_pool.resize(rc.workers)
    reward_pool.resize(cfg.reward.workers)
    return Topology(learner, rollout_dispatch, reward_dispatch, rollout_pool, reward_pool, restored)
