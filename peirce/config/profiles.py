"""Named override sets.

`SMOKE_BUDGET`: a tiny random Llama and toy budgets, every part still real (Ray, vLLM,
DeepSpeed, ZeroMQ, mergekit) at seconds per step — what `profile=smoke` and the tests
run. `SMOKE_WARMUP` is the stage-A warm-up's budget under that profile. `SMOKE_TRAIN` adds the toy "uppercase" task, whose dense reward a tiny model can
actually learn (see tests/trainer/test_engine_e2e.py).
"""

from __future__ import annotations

from typing import Any

SMOKE_BUDGET: dict[str, Any] = {
    "model.path": "tiny", "model.max_model_len": 512,
    "tasks.levels": "[1]", "tasks.n_per_level": 8, "tasks.prompt_style": "reference",
    "rollout.prompts_per_step": 2, "rollout.n_samples": 2, "rollout.max_tokens": 8, "rollout.temperature": 1.0,
    "rollout.top_k": 20, "rollout.kv_cache_gib": 1,
    "learner.lr": 1.0e-3, "learner.micro_batch_size": 4,
    "algorithm.kl_coef": 0.0, "trainer.max_steps": 3, "trainer.save_every": 100, "trainer.metrics_port": 0,
}

# The stage-A warm-up under profile=smoke (when enabled: smoke.yaml does): seconds on the tiny model.
SMOKE_WARMUP: dict[str, Any] = {"examples": 8, "batch_size": 4, "micro_batch_size": 4, "lr": 1.0e-3}

SMOKE_TRAIN: dict[str, Any] = {**SMOKE_BUDGET, "tasks.families": "[uppercase]", "model.max_model_len": 256}


def as_overrides(values: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]
