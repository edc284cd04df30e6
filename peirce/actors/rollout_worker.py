"""Rollout worker actor: one vLLM engine, a weights inbox, and the rollout loop thread.

On CPU the engine runs inside this actor (`rollout.engine_in_process`, see
`peirce.rollout.engine`): an engine failure raises in the loop thread or takes the actor
down with it. Otherwise vLLM runs its engine in a child process (`VLLM::EngineCore`). When
that process dies mid-generate, vLLM's sync client never answers: `generate` blocks forever
on its output queue, the loop thread stays alive, and a health check of the thread alone
would call the worker healthy while it holds its items forever. So `alive()` also checks
the engine processes recorded at start, and reports a dead one as the worker's death; the
pool then kills the actor, re-queues its items and starts a replacement.
"""

from __future__ import annotations

import logging
import os

import psutil
import ray

from peirce.actors.common import LoopThread, actor_setup
from peirce.config.schema import TrainConfig
from peirce.transport.network import bind_host
from peirce.transport.security import RunKeys

log = logging.getLogger(__name__)


class RolloutWorker:
    def __init__(self, model_dir: str, cfg_dict: dict, endpoint: str, weight_endpoint: str, run: str,
                 worker_id: str, start_version: int, keys: RunKeys | None = None) -> None:
        cfg = TrainConfig.model_validate(cfg_dict)
        self.metrics = actor_setup(run, worker_id, bind_host(cfg.transport.host))
        from transformers import AutoTokenizer

        from peirce.rollout.engine import RolloutEngine
        from peirce.rollout.worker import RolloutLoop
        from peirce.transport import strategies

        sync = strategies.get(cfg.weight_sync.strategy)
        sync.prepare_engine_env()

        self.engine = RolloutEngine(model_dir, dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len,
                                    seed=cfg.trainer.seed, gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
                                    kv_cache_gib=cfg.rollout.kv_cache_gib, version=start_version,
                                    in_process=cfg.rollout.engine_in_process_resolved,
                                    **sync.engine_kwargs)
        self.inbox = sync.inbox(weight_endpoint, f"{run}-{worker_id}", start_version, keys, engine=self.engine,
                                on_weights=self._weights_loaded)
        tokenizer = AutoTokenizer.from_pretrained(model_dir) if cfg.tasks.prompt_style == "chat_template" else None
        self.loop = RolloutLoop(self.engine, endpoint, self.inbox, worker_id=worker_id, prompt_style=cfg.tasks.prompt_style,
                                prompts_per_step=cfg.rollout.prompts_per_step, tokenizer=tokenizer,
                                on_generated=self._count, on_weights=self._weights_loaded, keys=keys,
                                on_skipped=lambda _v: self.metrics.inc("peirce_weight_versions_skipped_total"),
                                interrupt_on_new_weights=cfg.rollout.interrupt_on_new_weights,
                                max_interrupts=cfg.rollout.max_interrupts, on_partial=self._partial,
                                continuous=cfg.rollout.continuous)
        self.loop.rejects.hooks.append(lambda reason, _d: self.metrics.inc("peirce_rejected_frames_total", reason=reason))
        self.metrics.set("peirce_rollout_policy_version", start_version)
        self.engine_procs = engine_core_processes()
        self.thread = LoopThread(self.loop.run, "rollout-loop")

    def _count(self, samples, seconds: float) -> None:
        self.metrics.inc("peirce_rollout_samples_total", len(samples))
        self.metrics.inc("peirce_rollout_tokens_total", sum(len(s.response_token_ids) for s in samples))
        self.metrics.observe("peirce_rollout_generate_seconds", seconds)
        for s in samples:
            if s.version_segments:  # continued under newer weights: last - first version
                self.metrics.observe("peirce_rollout_version_span_steps", s.version_segments[-1][1] - s.policy_version)

    def _partial(self, stats) -> None:
        self.metrics.inc("peirce_rollout_interrupts_total", stats.interrupts)
        self.metrics.inc("peirce_rollout_interrupted_samples_total", stats.interrupted_samples)
        self.metrics.inc("peirce_rollout_continuations_total", stats.continuations)

    def _weights_loaded(self, version: int, seconds: float) -> None:
        self.metrics.set("peirce_rollout_policy_version", version)
        self.metrics.observe("peirce_weight_sync_seconds", seconds, side="load")

    def policy_version(self) -> int:
        return self.engine.policy_version

    def sequence_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> tuple[int, list[float]]:
        """(engine policy version, the engine's logprobs of a fixed sequence)."""
        return self.engine.policy_version, list(self.engine.sequence_logprobs(prompt_ids, response_ids))

    def drain(self, timeout_s: float = 600.0) -> int:
        """Stop taking work, finish the batch in hand, return the rest, and shut down: the
        engine too, since the pool kills the actor next and a kill runs no finalizer (the
        engine's /dev/shm staging file outlived every drained worker: 3.7 GB of RAM over a
        few days of test runs here)."""
        self.loop.stop_event.set()
        self.thread.join(timeout_s)
        self.inbox.close()
        self.metrics.withdraw()
        try:
            self.engine.close()
        except Exception:  # noqa: BLE001 - a worker on its way out; the kill follows regardless
            log.warning("rollout worker: engine did not close cleanly", exc_info=True)
        return self.loop.generated_groups

    def alive(self) -> bool:
        """True while the loop runs; raises naming the cause once the loop or the engine died."""
        dead = [p.pid for p in self.engine_procs if not _running(p)]
        if dead:
            raise RuntimeError(f"vLLM engine process(es) {dead} of this rollout worker exited; it cannot generate")
        return self.thread.alive()

    def pid(self) -> int:
        return os.getpid()

    def engine_pids(self) -> list[int]:
        """The vLLM engine-core processes under this actor (chaos tests kill them)."""
        return [p.pid for p in self.engine_procs]


def engine_core_processes() -> list[psutil.Process]:
    """This process's vLLM engine-core descendants (vLLM titles them `VLLM::EngineCore...`);
    empty when vLLM runs the engine in-process (VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "EngineCore" in " ".join(child.cmdline()) or "EngineCor" in child.name():
                found.append(child)
        except psutil.Error:
            continue  # exited or not ours to read
    return found


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


RolloutWorkerActor = ray.remote(RolloutWorker)
