"""Learner actor: DeepSpeed engine + weight publisher; coarse verbs train/sft/save/load."""

from __future__ import annotations

import functools
import os
import time
from dataclasses import replace
from typing import Any

import ray
import torch

from peirce.actors.common import actor_setup
from peirce.config.schema import TrainConfig
from peirce.learner.advantages import compute_advantages
from peirce.learner.batch import Sample, SFTExample, collate, collate_sft
from peirce.learner.dist_env import claim_single_rank_env
from peirce.learner.engine import LearnerConfig, LearnerEngine
from peirce.learner.losses import LossConfig, compute_loss
from peirce.learner.overlong import overlong
from peirce.model.precision import use_bf16
from peirce.transport import strategies
from peirce.transport.groups import unpack_messages
from peirce.transport.network import bind_host
from peirce.transport.security import RunKeys
from peirce.transport.wire import ScoredSample


def learner_config(cfg: TrainConfig) -> LearnerConfig:
    """The learner's settings. Weights are synced in the dtype the rollout engines serve, so
    an engine holds exactly the learner's weights rounded once to its own dtype: an fp32
    engine (AVX2 hosts) fed bf16 tensors sampled from a coarser policy than the learner
    trained, and from other weights than a resumed engine loads from the checkpoint."""
    from peirce.rollout.engine import resolve_dtype

    lc = cfg.learner
    return LearnerConfig(zero_stage=lc.zero_stage, bf16=use_bf16(lc.precision), lr=lc.lr,
                         weight_decay=lc.weight_decay, grad_clip=lc.grad_clip, micro_batch_size=lc.micro_batch_size,
                         gradient_checkpointing=lc.gradient_checkpointing, ref_model=cfg.algorithm.kl_coef > 0,
                         seed=cfg.trainer.seed, sync_dtype=resolve_dtype(cfg.model.dtype))


def loss_config(cfg: TrainConfig) -> LossConfig:
    a = cfg.algorithm
    return LossConfig(policy_loss=a.policy_loss, clip_low=a.clip_low, clip_high=a.clip_high, aggregation=a.aggregation,
                      kl_coef=a.kl_coef, kl_estimator=a.kl_estimator, entropy_coef=a.entropy_coef, tis_cap=a.tis_cap)


def build_batch(scored: list[ScoredSample], advantage: str, pad_token_id: int, *, overlong_filter: bool = False):
    """Collate scored samples and attach advantages computed over the batch (pure).

    `overlong_filter`: the `overlong` samples keep their reward in the group statistics
    (they were drawn from the policy like the rest) but their response_mask row is zeroed,
    so they add neither loss nor gradient nor weight to the token mean."""
    samples = [Sample(prompt_token_ids=s.sample.prompt_token_ids.tolist(),
                      response_token_ids=s.sample.response_token_ids.tolist(), advantage=0.0,
                      rollout_logprobs=s.sample.response_logprobs.tolist(), policy_version=s.sample.policy_version)
               for s in scored]
    batch = collate(samples, pad_token_id=pad_token_id)
    groups = {g: i for i, g in enumerate(dict.fromkeys(s.sample.group_id for s in scored))}
    rewards = torch.tensor([s.reward for s in scored], dtype=torch.float32)
    group_ids = torch.tensor([groups[s.sample.group_id] for s in scored], dtype=torch.long)
    adv = compute_advantages(advantage, rewards, group_ids, batch.response_mask)
    mask = batch.response_mask
    if overlong_filter:
        mask = mask * torch.tensor([not overlong(s) for s in scored], dtype=mask.dtype)[:, None]
    return replace(batch, response_mask=mask, advantages=adv * mask)


class Learner:
    """Plain class (testable without Ray); `LearnerActor` is the remote shell."""

    def __init__(self, model_dir: str, cfg_dict: dict[str, Any], run: str, keys: RunKeys | None = None) -> None:
        self.cfg = TrainConfig.model_validate(cfg_dict)
        host = bind_host(self.cfg.transport.host)  # this learner's own node when the run spans nodes
        self.metrics = actor_setup(run, "learner", host)
        claim_single_rank_env()  # one rank per learner actor today
        self.engine = LearnerEngine(model_dir, learner_config(self.cfg))
        self.loss_fn = functools.partial(compute_loss, loss_config(self.cfg))
        self.publisher = strategies.get(self.cfg.weight_sync.strategy).sender(self.cfg, host, keys)
        from transformers import AutoConfig

        hf_config = AutoConfig.from_pretrained(model_dir)
        self.pad_token_id = int(getattr(hf_config, "pad_token_id", None) or 0)
        self.vocab_size = int(hf_config.vocab_size)

    def weight_endpoint(self) -> str:
        return self.publisher.endpoint

    def pid(self) -> int:
        return os.getpid()

    def policy_version(self) -> int:
        return int(self.engine.policy_version)

    def train(self, payload: list[bytes]) -> dict[str, float]:
        scored = [m for m in unpack_messages(payload) if isinstance(m, ScoredSample)]
        batch = build_batch(scored, self.cfg.algorithm.advantage, self.pad_token_id,
                            overlong_filter=self.cfg.algorithm.overlong_filter)
        out = self.engine.train_step(batch, self.loss_fn, with_entropy=True)
        sync = self.publish()
        m = self.metrics
        for key, name in (("loss", "peirce_learner_loss"), ("actor/kl", "peirce_learner_kl"),
                          ("actor/entropy", "peirce_learner_entropy"), ("grad_norm", "peirce_learner_grad_norm")):
            if key in out:
                m.set(name, out[key])
        m.set("peirce_learner_step", self.engine.policy_version)
        m.observe("peirce_learner_step_seconds", out["seconds"])
        m.inc("peirce_trained_samples_total", len(scored))
        m.inc("peirce_trained_tokens_total", out["tokens"])
        return {**out, **sync}

    def sft(self, examples: list[SFTExample], lr: float | None = None) -> dict[str, float]:
        """One supervised update (token NLL on the responses, prompts masked), then a publish.

        Like `train`, it adds 1 to the engine's policy version and publishes the weights
        under it, so the engines' versions stay contiguous; the driver mirrors the version
        from the returned `policy_version`. `lr` None = `learner.lr` (without warmup).
        """
        batch = collate_sft(examples, pad_token_id=self.pad_token_id, vocab_size=self.vocab_size)
        out = self.engine.sft_step(batch, lr=lr)
        sync = self.publish()
        m = self.metrics
        m.set("peirce_learner_loss", out["loss"])
        m.set("peirce_learner_grad_norm", out["grad_norm"])
        m.set("peirce_learner_step", self.engine.policy_version)
        m.observe("peirce_learner_step_seconds", out["seconds"])
        m.inc("peirce_trained_tokens_total", out["tokens"])
        return {**out, **sync}

    def publish(self) -> dict[str, float]:
        t0 = time.perf_counter()
        stats = self.publisher.publish(dict(self.engine.named_parameters_for_sync()), self.engine.policy_version)
        seconds = time.perf_counter() - t0
        self.metrics.observe("peirce_weight_sync_seconds", seconds, side="send")
        self.metrics.inc("peirce_weight_sync_bytes_total", stats.bytes_sent, side="send")
        return {"weight_sync_seconds": seconds, "weight_sync_mb": stats.payload_bytes / 2**20,
                "weight_sync_evicted": float(len(stats.evicted))}

    def sequence_logprobs(self, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
        """The learner's logprobs of a fixed sequence (for the weight-sync exactness check)."""
        batch = collate([Sample(prompt_token_ids=prompt_ids, response_token_ids=response_ids, advantage=0.0)],
                        pad_token_id=self.pad_token_id)
        return self.engine.logprobs(batch)[0, : len(response_ids)].float().tolist()

    def optimizer_summary(self) -> dict[str, float]:
        """Step count and moment norms of the optimizer: compared across a resume."""
        state = self.engine.optimizer.state
        steps = [float(v["step"]) for v in state.values() if "step" in v]
        exp_avg = sum(float(v["exp_avg"].float().norm()) for v in state.values() if "exp_avg" in v)
        return {"step": max(steps, default=0.0), "exp_avg_norm": round(exp_avg, 6)}

    def save(self, directory: str, extra_state: dict[str, Any]) -> str:
        return str(self.engine.save_checkpoint(directory, extra_state))

    def load(self, directory: str) -> dict[str, Any]:
        return self.engine.load_checkpoint(directory)

    def close(self) -> None:
        self.publisher.close()
        self.metrics.withdraw()


LearnerActor = ray.remote(Learner)
