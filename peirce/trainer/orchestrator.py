"""The driver loop of one RL run: admit, dispatch, score, train, sync, checkpoint.

One screen of control flow; everything it calls is a small tested piece:
TaskSource (curriculum), StalenessController (admission), WorkDispatcher x2 (rollout
and reward work), WorkerPool x2 (runtime scaling), the learner actor (DeepSpeed +
weight publisher), RunDir (metrics, checkpoints) and ControlServer (`peirce scale`).
Training runs as a Ray future while the loop keeps generating and scoring, so with
`max_staleness > 0` generation overlaps training; admission control keeps every
sample within `max_staleness` policy versions of the policy that trains on it.
"""

from __future__ import annotations

import collections
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
import ray
from tqdm import tqdm

from peirce.actors.learner import LearnerActor
from peirce.actors.reward_worker import RewardWorkerActor
from peirce.actors.runtime import actor_log_options, attach_run_log
from peirce.actors.rollout_worker import RolloutWorkerActor
from peirce.config import TrainConfig, dump_config
from peirce.metrics import MetricsExporter, withdraw_target
from peirce.rewards.worker import ERROR_MARKER
from peirce.rollout.staleness import StalenessController
from peirce.tasks.base import Task
from peirce.trainer.control import ControlRequest, ControlServer
from peirce.trainer.health import RunHealth
from peirce.trainer.loggers import close_all, log_all, open_loggers
from peirce.trainer.run_dir import RunDir
from peirce.trainer.step_stats import StepStats
from peirce.trainer.task_source import TaskSource
from peirce.trainer.worker_pool import WorkerPool
from peirce.transport.dispatch import WorkDispatcher
from peirce.transport.frames import FrameError
from peirce.transport.groups import pack_messages, unpack_messages
from peirce.transport.wire import RolloutSample, ScoredSample, TaskMsg

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3


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


class Orchestrator:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> None:
        self.cfg = cfg
        self.run_dir = RunDir.create(cfg.run_dir)
        attach_run_log(self.run_dir.root)  # library chatter to <run>/logs/, not the console
        self.progress = progress
        if not resume:
            dump_config(cfg, self.run_dir.config_path)
        cfg_dict = cfg.model_dump(mode="json", by_alias=True)
        self.source = TaskSource(cfg)
        self.version = 0  # learner policy version (the StalenessController reads it)
        self.staleness = StalenessController(cfg.async_.max_staleness, cfg.rollout.prompts_per_step, self)
        self.metrics = MetricsExporter(run=cfg.name, worker="controller")
        if cfg.trainer.metrics_port is not None:
            self.metrics.serve(host=cfg.transport.host, port=cfg.trainer.metrics_port)
        self.rollout_dispatch = WorkDispatcher(cfg.transport.host)
        self.reward_dispatch = WorkDispatcher(cfg.transport.host)
        self.groups: dict[str, TaskMsg] = {}  # dispatched, not yet trained
        self.ready: collections.deque[list[ScoredSample]] = collections.deque()
        self.seq = 0
        self.step = 0
        self.dropped_groups = 0
        self.failed_groups = 0
        self.health = RunHealth(cfg, self.run_dir, self.metrics)

        model_dir = resolve_model(cfg.model.path)
        self.learner = LearnerActor.options(num_cpus=cfg.learner.num_cpus, num_gpus=cfg.learner.num_gpus,
                                            **actor_log_options(self.run_dir.root, "learner")).remote(
            str(model_dir), cfg_dict, cfg.name)
        start_version, engine_dir = 0, model_dir
        if resume and (ckpt := self.run_dir.latest_checkpoint()) is not None:
            extra = ray.get(self.learner.load.remote(str(ckpt)))
            self._restore(extra)
            start_version, engine_dir = int(extra["policy_version"]), ckpt
            self.version = start_version
            self.run_dir.truncate_metrics_after(self.step)
            log.info("resumed %s at step %d (policy version %d)", cfg.name, self.step, start_version)
        self.weight_endpoint = ray.get(self.learner.weight_endpoint.remote())
        rc = cfg.rollout
        self.rollout_pool = WorkerPool("rollout", on_dead=self._dead(self.rollout_dispatch), spawn=lambda wid: RolloutWorkerActor.options(
            num_cpus=rc.num_cpus, num_gpus=rc.num_gpus, **actor_log_options(self.run_dir.root, wid)).remote(
            str(engine_dir), cfg_dict, self.rollout_dispatch.endpoint, self.weight_endpoint, cfg.name, wid,
            start_version))
        scheme = {k: getattr(cfg.reward, k) for k in ("format_ok", "format_bad", "answer_correct", "answer_wrong",
                                                      "answer_unparsable")}
        self.reward_pool = WorkerPool("reward", on_dead=self._dead(self.reward_dispatch), spawn=lambda wid: RewardWorkerActor.options(
            num_cpus=0.25, **actor_log_options(self.run_dir.root, wid)).remote(
            self.reward_dispatch.endpoint, cfg.name, wid, cfg.reward.name, scheme))
        self.rollout_pool.resize(rc.workers)
        self.reward_pool.resize(cfg.reward.workers)
        self.control = ControlServer(self.run_dir, self._on_control, host=cfg.transport.host)
        self.loggers = open_loggers(cfg.trainer.loggers, self.run_dir, name=cfg.name, config=cfg_dict,
                                    first_step=self.step + 1)

    def _dead(self, dispatcher: WorkDispatcher):
        """What to do when a pool buries a worker: re-queue its items now, drop its target."""
        def on_dead(worker_id: str) -> None:
            dispatcher.retire(worker_id)
            withdraw_target(self.cfg.name, worker_id)
        return on_dead

    # -- control ----------------------------------------------------------------------
    def _on_control(self, req: ControlRequest) -> dict[str, Any]:
        if req.op == "scale":
            if req.rollout is not None:
                self.rollout_pool.resize(req.rollout)
            if req.reward is not None:
                self.reward_pool.resize(req.reward)
        elif req.op == "stop":
            self._stop_requested = True
        return self.status()

    def status(self) -> dict[str, Any]:
        return {"run": self.cfg.name, "step": self.step, "rollout": self.rollout_pool.size,
                "reward": self.reward_pool.size, "level": self.source.level, "in_flight": len(self.groups),
                "rollout_registered": self.rollout_dispatch.live_workers(),
                "reward_registered": self.reward_dispatch.live_workers(),
                "worker_deaths": self.rollout_pool.deaths + self.reward_pool.deaths}

    def get_version(self) -> int:
        return self.version

    # -- state --------------------------------------------------------------------------
    def _state(self, policy_version: int) -> dict[str, Any]:
        return {"step": self.step, "seq": self.seq, "policy_version": policy_version,
                "source": self.source.state_dict(), "staleness": self.staleness.state_dict(),
                "in_flight": [msgspec.to_builtins(m.task) for m in self.groups.values()],
                "health": self.health.state_dict()}

    def _restore(self, extra: dict[str, Any]) -> None:
        self.step, self.seq = int(extra["step"]), int(extra["seq"])
        self.source.load_state_dict(extra["source"])
        self.health.load_state_dict(extra.get("health", {}), self.step)
        self.staleness.load_state_dict(extra["staleness"])
        # Scored-but-untrained samples are not checkpointed: their tasks are regenerated
        # (pushed to the front below), so their accepted counts go.
        for version, count in extra["staleness"].get("accepted", {}).items():
            if count:
                self.staleness.on_discarded(int(version), int(count))
        # Tasks that were dispatched but not trained when we stopped go first, regenerated.
        self.source.push_front([msgspec.convert(t, Task) for t in extra.get("in_flight", [])])

    # -- loop ---------------------------------------------------------------------------
    _stop_requested = False

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        bar = tqdm(total=cfg.trainer.max_steps, initial=self.step, desc=cfg.name, disable=not self.progress,
                   dynamic_ncols=True)
        train_ref, batch = None, None
        try:
            while self.step < cfg.trainer.max_steps:
                self.control.poll()
                self.rollout_pool.reap()
                self.reward_pool.reap()
                finishing = self._stop_requested or self.source.done
                if not self._stop_requested:
                    self._admit()
                self._pump_rollouts()
                self._pump_rewards()
                last_partial = finishing and self.ready and len(self.ready) == len(self.groups)
                if train_ref is None and (self.staleness.may_train() or last_partial):
                    batch = self._take_batch()
                    flat = [s for g in batch for s in g]
                    train_ref = self.learner.train.remote([bytes(memoryview(f)) for f in pack_messages(flat)])
                    self._train_started = time.perf_counter()
                if train_ref is not None and ray.wait([train_ref], timeout=0)[0]:
                    self._finish_step(ray.get(train_ref), batch, bar)
                    train_ref, batch = None, None
                if finishing and not self.groups and train_ref is None:
                    break  # curriculum exhausted (or stop requested) and everything admitted trained
            if self.step and self.run_dir.latest_checkpoint() != self.run_dir.checkpoint_path(self.step):
                self.checkpoint(self.version)  # ended between save points
            if not self._stop_requested:
                self.run_dir.done_path.write_text(str(self.step))
            self.health.write_summary("stopped" if self._stop_requested else "done")
            return {"step": self.step, "run_dir": str(self.run_dir.root)}
        except BaseException as exc:
            self.health.write_summary("failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            bar.close()
            self.shutdown()

    def _admit(self) -> None:
        while not self.source.done and self.staleness.try_admit(1):
            task = self.source.next_task()
            if task is None:
                self.staleness.on_rejected(self.version)
                break
            gid = f"g{self.seq:08d}"
            self.seq += 1
            rc = self.cfg.rollout
            msg = TaskMsg(task=task, group_id=gid, n_samples=rc.n_samples,
                          sampling={"temperature": rc.temperature, "top_p": rc.top_p, "top_k": rc.top_k,
                                    "max_tokens": rc.max_tokens},
                          policy_version_at_dispatch=self.version)
            self.groups[gid] = msg
            self.rollout_dispatch.submit(gid, [bytes(memoryview(f)) for f in pack_messages([msg])])
        self.metrics.set("peirce_queue_depth_messages", len(self.rollout_dispatch.pending), queue="rollout")
        self.metrics.set("peirce_queue_depth_messages", len(self.reward_dispatch.pending), queue="reward")
        self.metrics.set("peirce_queue_depth_messages", len(self.ready), queue="train")

    def _retry_or_drop(self, gid: str, why: str) -> None:
        msg = self.groups[gid]
        if msg.attempt + 1 >= MAX_ATTEMPTS:
            log.error("group %s (%s) failed %d times (%s); dropped", gid, msg.task.id, MAX_ATTEMPTS, why)
            del self.groups[gid]
            self.staleness.on_rejected(msg.policy_version_at_dispatch)
            self.failed_groups += 1
            return
        retry = msgspec.structs.replace(msg, attempt=msg.attempt + 1)
        new_gid = f"{gid}r{retry.attempt}"
        retry = msgspec.structs.replace(retry, group_id=new_gid)
        del self.groups[gid]
        self.groups[new_gid] = retry
        self.rollout_dispatch.submit(new_gid, [bytes(memoryview(f)) for f in pack_messages([retry])])

    def _pump_rollouts(self) -> None:
        for gid, payload in self.rollout_dispatch.pump(5):
            if gid not in self.groups:
                continue
            if payload and bytes(payload[0]) == ERROR_MARKER:
                self._retry_or_drop(gid, bytes(payload[1]).decode() if len(payload) > 1 else "error")
                continue
            self.reward_dispatch.submit(gid, self._reward_payload(gid, payload))

    def _reward_payload(self, gid: str, rollout_payload: list) -> list[bytes]:
        samples = unpack_messages(rollout_payload)
        return [bytes(memoryview(f)) for f in pack_messages([self.groups[gid], *samples])]

    def _pump_rewards(self) -> None:
        for gid, payload in self.reward_dispatch.pump(5):
            if gid not in self.groups:
                continue
            try:
                if payload and bytes(payload[0]) == ERROR_MARKER:
                    raise FrameError("worker", bytes(payload[1]).decode() if len(payload) > 1 else "error")
                scored = [m for m in unpack_messages(payload) if isinstance(m, ScoredSample)]
            except FrameError as err:
                self._retry_or_drop(gid, str(err))
                continue
            version = self.groups[gid].policy_version_at_dispatch
            if self.cfg.algorithm.dynamic_sampling and len({s.reward for s in scored}) <= 1:
                del self.groups[gid]  # zero-variance group: no gradient; make room for another
                self.staleness.on_rejected(version)
                self.dropped_groups += 1
                continue
            self.staleness.on_accepted(version)
            self.ready.append(scored)

    def _take_batch(self) -> list[list[ScoredSample]]:
        """The B oldest accepted groups (by admission version), as the gate assumed."""
        order = sorted(range(len(self.ready)),
                       key=lambda i: self.groups[self.ready[i][0].sample.group_id].policy_version_at_dispatch)
        picked = set(order[: self.cfg.rollout.prompts_per_step])
        batch = [g for i, g in enumerate(self.ready) if i in picked]
        self.ready = collections.deque(g for i, g in enumerate(self.ready) if i not in picked)
        self.staleness.on_consumed(len(batch), versions=[
            self.groups[g[0].sample.group_id].policy_version_at_dispatch for g in batch])
        return batch

    def _finish_step(self, out: dict[str, float], batch: list[list[ScoredSample]], bar: tqdm) -> None:
        trained_version = int(out["policy_version"]) - 1  # version the batch was trained under
        stats = StepStats.from_batch(batch, trained_version)
        for group in batch:
            del self.groups[group[0].sample.group_id]
        self.step += 1
        self.version = int(out["policy_version"])
        self.source.report(stats.level_rewards)
        record = {"step": self.step, "time": time.time(), "policy_version": int(out["policy_version"]),
                  # level: the highest level this step trained on; next_level: where the
                  # curriculum draws from now (None once every level is done)
                  "level": max((lv for _, lv in stats.level_rewards), default=None),
                  "next_level": self.source.level, "rollout_workers": self.rollout_pool.size,
                  "reward_workers": self.reward_pool.size, "dropped_groups": self.dropped_groups,
                  "failed_groups": self.failed_groups, **stats.as_record(), **_learner_fields(out),
                  **self.health.on_step(self.step, out, batch)}
        log_all(self.loggers, self.step, record)
        with (self.run_dir.root / "ledger.jsonl").open("a") as f:
            for group in batch:
                f.write(msgspec.json.encode({"step": self.step, "group_id": group[0].sample.group_id,
                                             "task_id": group[0].sample.task_id}).decode() + "\n")
        self._export(stats)
        bar.update(1)
        bar.set_postfix(reward=f"{stats.reward_mean:.2f}", level=self.source.level,
                        stale=f"{stats.staleness_mean:.1f}")
        if (self.step % self.cfg.trainer.save_every == 0 or self.step >= self.cfg.trainer.max_steps
                or self.health.stop):  # a guard's stop keeps the learner's state first
            self.checkpoint(int(out["policy_version"]))
        if self.health.stop:
            self.health.raise_stop(str(self.run_dir.checkpoint_path(self.step)))

    def _export(self, stats: StepStats) -> None:
        self.metrics.set("peirce_staleness_mean_steps", stats.staleness_mean)
        for s in stats.staleness:
            self.metrics.observe("peirce_staleness_steps", s)
        for (task, level), value in stats.level_rewards.items():
            self.metrics.set("peirce_reward_mean", sum(value) / len(value), task=task, level=str(level))
        self.metrics.set("peirce_workers", self.rollout_pool.size, role="rollout")
        self.metrics.set("peirce_workers", self.reward_pool.size, role="reward")

    def checkpoint(self, policy_version: int) -> Path:
        path = self.run_dir.checkpoint_path(self.step)
        ray.get(self.learner.save.remote(str(path), self._state(policy_version)))
        self.run_dir.mark_latest(self.step)
        return path

    def shutdown(self) -> None:
        self.control.close()
        self.rollout_pool.shutdown()
        self.reward_pool.shutdown()
        try:
            ray.get(self.learner.close.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - best effort on the way out
            log.warning("learner did not close cleanly", exc_info=True)
        ray.kill(self.learner)
        self.rollout_dispatch.close()
        self.reward_dispatch.close()
        self.metrics.withdraw()
        close_all(self.loggers)


def _learner_fields(out: dict[str, float]) -> dict[str, float]:
    keep = {"loss": "loss", "actor/kl": "kl", "actor/entropy": "entropy", "grad_norm": "grad_norm",
            "actor/clip_frac": "clip_frac", "actor/pg_loss": "pg_loss", "actor/tis_mean": "tis_mean",
            "seconds": "train_seconds", "tokens": "tokens", "weight_sync_seconds": "weight_sync_seconds",
            "weight_sync_mb": "weight_sync_mb", "lr": "lr"}
    return {new: out[old] for old, new in keep.items() if old in out}
