"""The whole recipe in one YAML: stage A (three specialists at once), stage B (merge),
stage C (domain RL from the merge, and from the base as the baseline), evaluation.

Each stage section holds *partial* TrainConfig overrides (dotted keys or nested maps);
the full config of every run is resolved, validated and written to its run directory.
`profile: smoke` swaps in a tiny random Llama and toy budgets for every stage.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from peirce.config.schema import levels_in_range


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StageA(_Strict):
    common: dict[str, Any] = Field(default_factory=dict, description="Overrides shared by every specialist.")
    specialists: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"deduction": {}, "induction": {}, "abduction": {}},
        description="Specialist name -> its own overrides (tasks.families defaults to [name]); a `warmup` key "
                    "in it overrides stage_a.warmup for that specialist.")
    warmup: dict[str, Any] = Field(
        default_factory=dict,
        description="Supervised warm-up on worked solutions before each specialist's RL (peirce.sft.config."
                    "SFTConfig fields: examples, epochs, lr, batch_size, micro_batch_size, levels, ...) plus "
                    "`enabled`: true, false, or unset = on for the embedded model only (it never samples the "
                    "answer format, so RL from it has no signal). Its checkpoint starts the RL run.")


class StageB(_Strict):
    method: Literal["linear", "task_arithmetic", "ties"] = "linear"
    weights: dict[str, float] = Field(
        default_factory=lambda: {"deduction": 1.0, "induction": 0.2, "abduction": 0.1},
        description="Reference weights; mergekit's linear normalises them (effective 0.769/0.154/0.077) "
                    "unless normalize is false.")
    normalize: bool = True
    density: float | None = Field(None, gt=0, le=1, description="ties: fraction of each task vector kept (0, 1].")


class StageC(_Strict):
    train: dict[str, Any] = Field(default_factory=dict, description="Overrides of the domain-RL runs.")
    starts: list[Literal["merged", "base"]] = Field(default_factory=lambda: ["merged", "base"],
                                                     description="Run domain RL from these starting points.")


class SuiteOverride(_Strict):
    """One suite's own draw and length budget (unset fields follow eval.*)."""

    levels: list[int] | None = None
    per_level: int | None = Field(None, ge=1)
    limit: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1)

    @field_validator("levels")
    @classmethod
    def _levels_in_range(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not value:
            raise ValueError("must not be empty (leave it unset to follow eval.levels)")
        return value if value is None else levels_in_range(value)


class EvalStage(_Strict):
    suites: list[str] = Field(default_factory=lambda: ["maa-deduction", "maa-induction", "maa-abduction",
                                                       "math-sample"])
    n: int = Field(1, ge=1, description="Samples per problem.")
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy (pass@1 as in the paper).")
    k: list[int] = Field(default_factory=lambda: [1])
    max_tokens: int = Field(256, ge=1)
    limit: int | None = Field(None, ge=1, description="At most this many problems per suite.")
    levels: list[int] = Field(default_factory=lambda: [1, 2], description="Levels of the generated MAA suites.")
    per_level: int = Field(50, ge=1, description="Generated MAA problems per level (before `limit`).")
    per_suite: dict[str, SuiteOverride] = Field(
        default_factory=dict, description="Suite name -> its own levels / per_level / limit / max_tokens.")
    every_suite: bool = Field(
        False, description="Evaluate every checkpoint on every suite. false: base and merged on every suite, each "
                           "specialist and its warm-up on its own maa-<task> suites, domain runs on the others.")
    kv_cache_gib: float = Field(2.0, gt=0, description="KV cache GiB of the evaluation engine (it runs alone).")
    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="Evaluation engine dtype. auto: bf16 where it is native (CUDA, AVX512-BF16/AMX), else "
                            "fp32. float32 makes greedy scores independent of the host kind (small models flip "
                            "near-ties under bf16 rounding).")

    @field_validator("k")
    @classmethod
    def _k_within_n(cls, value: list[int], info: ValidationInfo) -> list[int]:
        n = info.data.get("n")
        bad = [k for k in value if k < 1 or (n is not None and k > n)]
        if bad:
            raise ValueError(f"every k must be within 1..eval.n ({n}) for an unbiased pass@k; out of range: {bad[:10]}")
        return value

    _levels_in_range = field_validator("levels")(levels_in_range)

    @field_validator("per_suite")
    @classmethod
    def _known_suites(cls, value: dict[str, SuiteOverride], info: ValidationInfo) -> dict[str, SuiteOverride]:
        suites = info.data.get("suites") or []
        unknown = [name for name in value if name not in suites]
        if unknown:
            raise ValueError(f"names suites that eval.suites does not list: {unknown[:5]} (suites: {suites})")
        return value


class PipelineConfig(_Strict):
    name: str = Field("maa", pattern=r"^[A-Za-z0-9_.-]+$")
    run_dir: str = "runs/maa"
    profile: Literal["default", "smoke"] = "default"
    base_model: str = Field("embedded", description="HF folder, 'embedded' or 'tiny'.")
    common: dict[str, Any] = Field(default_factory=dict, description="Overrides applied to every RL run.")
    max_concurrent_runs: int | None = Field(
        None, ge=1, description="Runs (warm-ups, specialists, domain runs) trained at once; null = all of a stage. "
                                "Lower it when memory is short: each run holds a learner and its engines.")
    stage_a: StageA = Field(default_factory=StageA)
    stage_b: StageB = Field(default_factory=StageB)
    stage_c: StageC = Field(default_factory=StageC)
    eval: EvalStage = Field(default_factory=EvalStage)
