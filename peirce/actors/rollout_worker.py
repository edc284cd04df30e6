"""Rollout worker actor: one vLLM engine, a weights inbox, and the rollout loop thread."""

from __future__ import annotations

import ray

from peirce.actors.common import LoopThread, actor_setup
from peirce.config.schema import TrainConfig


class RolloutWorker:
    def __init__(self, model_dir: str, cfg_dict: dict, endpoint: str, weight_endpoint: str, run: str,
                 worker_id: str, start_version: int) -> None:
        cfg = TrainConfig.model_validate(cfg_dict)
        self.metrics = actor_setup(run, worker_id)
        from transformers import AutoTokenizer

        from peirce.rollout.engine import RolloutEngine
        from peirce.rollout.weights_inbox import WeightsInbox
        from peirce.rollout.worker import RolloutLoop

        self.engine = RolloutEngine(model_dir, dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len,
                                    seed=cfg.trainer.seed, gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
                                    kv_cache_gib=cfg.rollout.kv_cache_gib, version=start_version)
        self.inbox = WeightsInbox(weight_endpoint, f"{run}-{worker_id}", start_version)
        tokenizer = AutoTokenizer.from_pretrained(model_dir) if cfg.tasks.prompt_style == "chat_template" else None
        self.loop = RolloutLoop(self.engine, endpoint, self.inbox, worker_id=worker_id, prompt_style=cfg.tasks.prompt_style,
                                batch_groups=cfg.rollout.prompts_per_step, tokenizer=tokenizer,
                                on_generated=self._count, on_weights=self._weights_loaded)
        self.loop.rejects.hooks.append(lambda reason, _d: self.metrics.inc("peirce_rejected_frames_total", reason=reason))
        self.metrics.set("peirce_rollout_policy_version", start_version)
        self.thread = LoopThread(self.loop.run, "rollout-loop")

    def _count(self, samples, seconds: float) -> None:
        self.metrics.inc("peirce_rollout_samples_total", len(samples))
        self.metrics.inc("peirce_rollout_tokens_total", sum(len(s.response_token_ids) for s in samples))
        self.metrics.observe("peirce_rollout_generate_seconds", seconds)

    def _weights_loaded(self, version: int, seconds: float) -> None:
        self.metrics.set("peirce_rollout_policy_version", version)
        self.metrics.observe("peirce_weight_sync_seconds", seconds, side="load")

    def policy_version(self) -> int:
        return self.engine.policy_version

    def sequence_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> tuple[int, list[float]]:
        """(engine policy version, the engine's logprobs of a fixed sequence)."""
        return self.engine.policy_version, list(self.engine.sequence_logprobs(prompt_ids, response_ids))

    def drain(self, timeout_s: float = 600.0) -> int:
        """Stop taking work, finish the batch in hand, return the rest, and shut down."""
        self.loop.stop_event.set()
        self.thread.join(timeout_s)
        self.inbox.close()
        self.metrics.withdraw()
        return self.loop.generated_groups

    def alive(self) -> bool:
        return self.thread.alive()


RolloutWorkerActor = ray.remote(RolloutWorker)
