"""The driver loop of one RL run: admit, dispatch, score, train, sync, checkpoint.

One screen of control flow that only moves bytes. What happens to a prompt group
(admission under the staleness bound, retries, dynamic sampling, oldest-first batches)
is decided by the pure GroupPlanner (peirce.trainer.planner); the actors and sockets
(learner, rollout and reward WorkerPools and their WorkDispatchers) come from one call,
`build_topology` (peirce.trainer.topology); TaskSource is the curriculum, RunDir holds
metrics and checkpoints, ControlServer serves `peirce scale`. Training runs as a pending
learner call (through the topology's `calls`: a Ray future, or a thread in fast tests)
while the loop keeps generating and scoring, so with `max_staleness > 0` generation
overlaps training. A malformed worker result is a counted rejection
(`peirce_rejected_results_total{queue, reason}`) and a retry of its group, never an
exception in this loop.

MASA (`algorithm.meta.enabled`): the planner runs each prompt's meta phase; this loop
adds the meta numbers to each step's record and Prometheus, and every
`meta.expert.every` steps takes an SFT step (the learner's `sft` verb, its own lr) on the
buffered expert meta trajectories, tokenized here with the model's tokenizer.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from peirce.actors.runtime import attach_run_log
from peirce.config import TrainConfig, dump_config
from peirce.masa.ids import solution_group_id
from peirce.metrics import MetricsExporter
from peirce.trainer.control import ControlRequest, ControlServer
from peirce.trainer.health import RunHealth, tasks_exhausted, untrained_counts
from peirce.trainer.idle import IdleClock
from peirce.trainer.loggers import close_all, log_all, open_loggers
from peirce.trainer.planner import (Decision, Drop, Filtered, Gated, GroupPlanner, PlanConfig, Rejected, Retry,
                                    Submit, read_result)
from peirce.trainer.run_dir import RunDir
from peirce.trainer.step_stats import StepStats
from peirce.trainer.task_source import TaskSource
from peirce.trainer.topology import Topology, build_topology, resolve_model
from peirce.trainer.wakeup import Wakeup
from peirce.transport.groups import pack_messages
from peirce.transport.network import bind_host
from peirce.transport.wire import RolloutSample, ScoredSample

__all__ = ["Orchestrator", "resolve_model"]  # resolve_model: imported from here by pipeline, preflight, sft

log = logging.getLogger(__name__)


class Orchestrator:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, progress: bool = True,
                 topology: Topology | None = None) -> None:
        """`topology`: the actors and dispatchers to drive (default: `build_topology`, which
        loads the latest checkpoint into the learner when `resume`)."""
        self.cfg = cfg
        self.run_dir = RunDir.create(cfg.run_dir)
        attach_run_log(self.run_dir.root)  # library chatter to <run>/logs/, not the console
        self.progress = progress
        if not resume:
            dump_config(cfg, self.run_dir.config_path)
        cfg_dict = cfg.model_dump(mode="json", by_alias=True)
        self.source = TaskSource(cfg)
        self.planner = GroupPlanner(PlanConfig.from_train_config(cfg))
        self.metrics = MetricsExporter(run=cfg.name, worker="controller")
        if cfg.trainer.metrics_port is not None:
            self.metrics.serve(host=bind_host(cfg.transport.host), port=cfg.trainer.metrics_port)
        self.step = 0
        self.idle = IdleClock(time.monotonic())
        self._wakeup = Wakeup()  # set when a train call returns (see peirce.trainer.wakeup)
        self.health = RunHealth(cfg, self.run_dir, self.metrics)
        ckpt = self.run_dir.latest_checkpoint() if resume else None
        self.topology = topology or build_topology(cfg, self.run_dir.root, ckpt)
        if self.topology.restored is not None:
            self._restore(self.topology.restored)
            self.run_dir.truncate_after(self.step)
            log.info("resumed %s at step %d (policy version %d)", cfg.name, self.step, self.version)
        # Loopback always: `peirce scale|stop` run on the driver's machine, and this socket has no keys.
        self.control = ControlServer(self.run_dir, self._on_control)
        self.loggers = open_loggers(cfg.trainer.loggers, self.run_dir, name=cfg.name, config=cfg_dict,
                                    first_step=self.step + 1)

    # The topology's parts by name (tests and `peirce scale` reach them through the driver).
    learner = property(lambda self: self.topology.learner)
    rollout_pool = property(lambda self: self.topology.rollout_pool)
    reward_pool = property(lambda self: self.topology.reward_pool)
    rollout_dispatch = property(lambda self: self.topology.rollout_dispatch)
    reward_dispatch = property(lambda self: self.topology.reward_dispatch)
    calls = property(lambda self: self.topology.calls)

    @property
    def version(self) -> int:
        """The learner's policy version, as the planner (and its staleness controller) sees it."""
        return self.planner.version

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
                "reward": self.reward_pool.size, "level": self.source.level, "in_flight": self.planner.in_flight,
                "rollout_registered": self.rollout_dispatch.live_workers(),
                "reward_registered": self.reward_dispatch.live_workers(),
                "worker_deaths": self.rollout_pool.deaths + self.reward_pool.deaths,
                "oom_deaths": self.rollout_pool.oom_deaths + self.reward_pool.oom_deaths}

    # -- state --------------------------------------------------------------------------
    def _state(self, policy_version: int) -> dict[str, Any]:
        return {"step": self.step, "policy_version": policy_version, "source": self.source.state_dict(),
                **self.planner.state_dict(), "health": self.health.state_dict()}

    def _restore(self, extra: dict[str, Any]) -> None:
        self.step = int(extra["step"])
        self.source.load_state_dict(extra["source"])
        self.health.load_state_dict(extra.get("health", {}), self.step)
        # Tasks that were dispatched but not trained when we stopped go first, regenerated.
        self.source.push_front(self.planner.load_state_dict(extra))

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
                    self._carry_out(self.planner.admit(self.source))
                    self._export_queues()
                for gid, payload in self.rollout_dispatch.pump(5, wake=self._wakeup):
                    self.on_rollout_result(gid, payload)
                for gid, payload in self.reward_dispatch.pump(5, wake=self._wakeup):
                    self.on_reward_result(gid, payload)
                self.idle.tick(time.monotonic(), learner=[train_ref is not None],
                               rollout=self.rollout_dispatch.holding())
                self._wakeup.clear()  # looked at now; a return after this wakes the next pass's waits
                if train_ref is not None and self.calls.done(train_ref):
                    self._finish_step(self.calls.get(train_ref), batch, bar)
                    # a checkpoint or an expert SFT step inside it kept the learner busy
                    self.idle.tick(time.monotonic(), learner=[True], rollout=self.rollout_dispatch.holding())
                    train_ref, batch = None, None
                if train_ref is None and self.step < cfg.trainer.max_steps:  # the next step in this same pass
                    batch, drops = self.planner.next_batch(finishing)
                    self._carry_out(drops)
                    if batch:
                        flat = [s for g in batch for s in g]
                        train_ref = self.calls.call(self.learner, "train",
                                                    [bytes(memoryview(f)) for f in pack_messages(flat)])
                        self.calls.when_done(train_ref, self._wakeup.set)  # its return ends the next waits
                if finishing and not self.planner.in_flight and train_ref is None:
                    break  # curriculum exhausted (or stop requested) and everything admitted trained
            if self.step and self.run_dir.latest_checkpoint() != self.run_dir.checkpoint_path(self.step):
                self.checkpoint(self.version)  # ended between save points
            ended_early = None
            if not self._stop_requested:
                self.run_dir.done_path.write_text(str(self.step))
                if self.step < cfg.trainer.max_steps:
                    untrained = untrained_counts(r["kind"] for r in self.run_dir.read_jsonl(self.run_dir.drops_path))
                    ended_early = tasks_exhausted(cfg.name, self.step, cfg.trainer.max_steps, untrained)
                    log.warning(ended_early)
            self.health.write_summary("stopped" if self._stop_requested else "done", ended_early=ended_early)
            return {"step": self.step, "run_dir": str(self.run_dir.root)}
        except BaseException as exc:
            self.health.write_summary("failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            bar.close()
            self.shutdown()

    def _export_queues(self) -> None:
        self.metrics.set("peirce_queue_depth_messages", len(self.rollout_dispatch.pending), queue="rollout")
        self.metrics.set("peirce_queue_depth_messages", len(self.reward_dispatch.pending), queue="reward")
        self.metrics.set("peirce_queue_depth_messages", len(self.planner.ready), queue="train")

    # -- worker results: bytes in, the planner's decisions out ---------------------------
    def on_rollout_result(self, gid: str, payload: list) -> None:
        """One rollout worker result; nothing in `payload` can raise out of here."""
        self._carry_out(self.planner.on_rollout_result(gid, read_result(payload, RolloutSample)))

    def on_reward_result(self, gid: str, payload: list) -> None:
        """One reward worker result; nothing in `payload` can raise out of here."""
        self._carry_out(self.planner.on_reward_result(gid, read_result(payload, ScoredSample)))

    def _carry_out(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Retry):
                log.warning("group %s failed (%s); retrying as %s", d.old_gid, d.why, d.submit.gid)
                d = d.submit
            if isinstance(d, Submit):
                dispatch = self.rollout_dispatch if d.queue == "rollout" else self.reward_dispatch
                dispatch.submit(d.gid, [bytes(memoryview(f)) for f in pack_messages(list(d.messages))])
            elif isinstance(d, Rejected):
                log.warning("rejected %s result for %s: %s: %.200s", d.queue, d.gid, d.reason, d.detail)
                self.metrics.inc("peirce_rejected_results_total", 1, queue=d.queue, reason=d.reason)
            elif isinstance(d, Drop):
                log.error("group %s (%s) dropped (%s): %s", d.gid, d.task_id, d.kind, d.why)
                self._record_drop(d.gid, d.task_id, d.kind, d.why)
            elif isinstance(d, Filtered):
                self._record_drop(d.gid, d.task_id, "filtered", d.why)
            elif isinstance(d, Gated):
                self._record_drop(d.gid, d.task_id, "gated", "MASA: the meta predictions agreed on a zero-variance "
                                  "group; solutions skipped")

    def _record_drop(self, gid: str, task_id: str, kind: str, why: str) -> None:
        """Every group that leaves untrained gets a line in drops.jsonl: with ledger.jsonl it
        accounts for every admitted task (trained once, or dropped with a reason)."""
        self.run_dir.append_jsonl(self.run_dir.drops_path, [
            {"step": self.step + 1, "group_id": gid, "task_id": task_id, "kind": kind, "why": why[:200]}])

    def _finish_step(self, out: dict[str, float], batch: list[list[ScoredSample]], bar: tqdm) -> None:
        trained_version = int(out["policy_version"]) - 1  # version the batch was trained under
        stats = StepStats.from_batch(batch, trained_version)
        meta_fields = self._meta_fields(stats, batch) if self.planner.meta_planner is not None else {}
        self.planner.on_trained(batch, int(out["policy_version"]))
        self.step += 1
        self.source.report(stats.level_rewards)
        meta_fields.update(self._expert_step())
        idle = self.idle.take()
        for role, ratio in idle.items():
            if ratio is not None:
                self.metrics.set("peirce_idle_ratio", ratio, role=role)
        record = {"step": self.step, "time": time.time(), "policy_version": int(out["policy_version"]),
                  # level: the highest level this step trained on; next_level: where the
                  # curriculum draws from now (None once every level is done)
                  "level": max((lv for _, lv in stats.level_rewards), default=None),
                  "next_level": self.source.level, "rollout_workers": self.rollout_pool.size,
                  "reward_workers": self.reward_pool.size, "dropped_groups": self.planner.dropped_groups,
                  "failed_groups": self.planner.failed_groups,
                  "learner_idle_ratio": idle.get("learner"), "rollout_idle_ratio": idle.get("rollout"),
                  **stats.as_record(), **_learner_fields(out),
                  **self.health.on_step(self.step, out, batch), **meta_fields}
        log_all(self.loggers, self.step, record)
        self.run_dir.append_jsonl(self.run_dir.ledger_path, [
            # the prompt's id, also for a MASA entry that kept only its meta samples
            {"step": self.step, "group_id": solution_group_id(g[0].sample.group_id), "task_id": g[0].sample.task_id}
            for g in batch])
        self._export(stats)
        bar.update(1)
        bar.set_postfix(reward=f"{stats.reward_mean:.2f}", level=self.source.level,
                        stale=f"{stats.staleness_mean:.1f}")
        if (self.step % self.cfg.trainer.save_every == 0 or self.step >= self.cfg.trainer.max_steps
                or self.health.stop):  # a guard's stop keeps the learner's state first
            self.checkpoint(self.version)  # == out["policy_version"] unless an expert SFT step followed
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

    # -- MASA ---------------------------------------------------------------------------
    def _meta_fields(self, stats: StepStats, batch: list[list[ScoredSample]]) -> dict[str, Any]:
        """The step's meta record fields; exports the matching Prometheus series."""
        counters = self.planner.take_meta_counters()
        gating = self.planner.gating
        caps = self.planner.solution_caps(batch)
        saved_by_cutoff = self.planner.cutoff_savings(batch)
        rec: dict[str, Any] = {**stats.meta_record(), "meta/prompts_gated": counters.gated,
                               "meta/prompts_audited": counters.audited, "meta/gated_total": gating.gated,
                               "meta/gating_precision": gating.precision, "meta/gating_recall": gating.recall,
                               "meta/gated_share": gating.gated_share,
                               "meta/tokens_saved_gating": counters.saved_by_gating,
                               "meta/tokens_saved_cutoff": saved_by_cutoff,
                               "meta/solution_max_tokens_mean": sum(caps) / len(caps) if caps else None,
                               "meta/solution_max_tokens_max": max(caps, default=None)}
        m = self.metrics
        for part in ("reward_mean", "reward_length", "reward_pass_rate", "reward_notions"):
            if rec.get(f"meta/{part}") is not None:
                m.set("peirce_meta_reward_mean", rec[f"meta/{part}"],
                      part="all" if part == "reward_mean" else part.removeprefix("reward_"))
        for key, name in (("meta/calibration_error", "peirce_meta_calibration_error"),
                          ("meta/gating_precision", "peirce_meta_gating_precision"),
                          ("meta/gating_recall", "peirce_meta_gating_recall"),
                          ("meta/token_share", "peirce_meta_token_share")):
            if rec.get(key) is not None:
                m.set(name, rec[key])
        m.inc("peirce_meta_prompts_gated_total", counters.gated)
        m.inc("peirce_meta_tokens_saved_total", counters.saved_by_gating, by="gating")
        m.inc("peirce_meta_tokens_saved_total", saved_by_cutoff, by="cutoff")
        return rec

    _tokenizer: Any = None

    def _expert_step(self) -> dict[str, Any]:
        """An SFT step on the buffered expert meta trajectories when one is due (blocking:
        it runs between RL steps, and the planner counts its version bump as idle)."""
        buffer, meta = self.planner.expert, self.cfg.algorithm.meta
        if buffer is None or not buffer.due(self.step):
            return {}
        from peirce.learner.batch import SFTExample
        from peirce.masa.prompt import render_meta
        from peirce.tasks.prompts import encode_prompt

        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(self.cfg.model.path)))
        tok, taken = self._tokenizer, buffer.take()
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        examples = []
        for ex in taken:
            rendered = render_meta(ex.prompt, self.cfg.tasks.prompt_style, tok)
            prompt_ids = encode_prompt(tok, rendered.text)  # as the rollout engine tokenises it
            target_ids = tok(ex.target, add_special_tokens=False).input_ids + eos
            room = self.cfg.model.max_model_len - len(prompt_ids)
            if room > 1:
                examples.append(SFTExample(prompt_token_ids=prompt_ids, response_token_ids=target_ids[:room]))
        if not examples:
            return {"meta/sft_examples": 0}
        out = self.calls.get(self.calls.call(self.learner, "sft", examples, meta.expert.lr))
        self.planner.advance_version(int(out["policy_version"]))
        log.info("expert SFT step on %d meta trajectories (lr %g): loss %.4f", len(examples), meta.expert.lr,
                 out["loss"])
        return {"meta/sft_examples": len(examples), "meta/sft_loss": out["loss"],
                "meta/sft_policy_version": self.version}

    def checkpoint(self, policy_version: int) -> Path:
        path = self.run_dir.checkpoint_path(self.step)
        self.calls.get(self.calls.call(self.learner, "save", str(path), self._state(policy_version)))
        self.run_dir.mark_latest(self.step)
        return path

    def shutdown(self) -> None:
        self.control.close()
        self.topology.shutdown()
        self._wakeup.close()
        self.metrics.withdraw()
        close_all(self.loggers)


def _learner_fields(out: dict[str, float]) -> dict[str, float]:
    keep = {"loss": "loss", "actor/kl": "kl", "actor/entropy": "entropy", "grad_norm": "grad_norm",
            "actor/clip_frac": "clip_frac", "actor/pg_loss": "pg_loss", "actor/tis_mean": "tis_mean",
            "seconds": "train_seconds", "tokens": "tokens", "weight_sync_seconds": "weight_sync_seconds",
            "weight_sync_mb": "weight_sync_mb", "lr": "lr"}
    return {new: out[old] for old, new in keep.items() if old in out}
