"""Configuration of one supervised run on worked solutions (`peirce sft`, the stage-A warm-up).

Why a run of its own: the embedded 135M model never samples the `</think><answer>` format,
so RL from it has no reward signal; a few hundred program-written completions teach the
format first. The learning rate matters (a probe: 3e-4 for one epoch took greedy format
adherence from 0/64 to 64/64, 3e-5 for two epochs left it at 0/64), hence the default.

Flat fields (no sections), so `peirce sft cfg.yaml lr=1e-4 examples=64` reads naturally.
Torch-free; the model path is checked at load time only (LOAD_CONTEXT), like TrainConfig.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator

from peirce.config.errors import FieldRuleError
from peirce.config.schema import BUILTIN_MODELS

Int = Annotated[int, Strict()]


class SFTConfig(BaseModel):
    """Supervised training on worked solutions of generated train-split puzzles."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    name: str = Field("sft", pattern=r"^[A-Za-z0-9_.-]+$")
    run_dir: str = Field("runs/sft", description="Where config.yaml, metrics.jsonl and checkpoints/ go.")
    model: str = Field("embedded", description="Starting model: HF folder, 'embedded' or 'tiny'.")
    families: list[str] = Field(default_factory=lambda: ["deduction"], min_length=1,
                                description="Task families with worked solutions (deduction, induction, abduction).")
    levels: list[Int] = Field(default_factory=lambda: [1], min_length=1, description="Levels the puzzles come from.")
    examples: Int = Field(128, ge=1, description="Examples per family, split evenly over `levels` (a level whose "
                                                 "train split is smaller gives what it has).")
    epochs: Int = Field(1, ge=1, description="Passes over the examples (reshuffled each epoch).")
    lr: float = Field(3e-4, gt=0, le=1, description="Learning rate, constant (AdamW).")
    batch_size: Int = Field(8, ge=1, description="Examples per optimizer step.")
    micro_batch_size: Int = Field(4, ge=1, description="Rows per forward/backward pass (memory, not the math).")
    max_seq_len: Int = Field(1024, ge=16, description="Examples with more prompt + response tokens are dropped "
                                                      "(counted in the summary).")
    prompt_style: Literal["reference", "chat_template"] = Field(
        "chat_template", description="Prompt renderer; must match the RL run the model goes to.")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="As learner.precision.")
    gradient_checkpointing: bool = False
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    seed: Int = Field(0, ge=0, le=2**32 - 1, description="Puzzle generation and shuffling seed.")

    @field_validator("levels")
    @classmethod
    def _levels_in_range(cls, value: list[int]) -> list[int]:
        bad = [lvl for lvl in value if not 1 <= lvl <= 5]
        if bad or len(set(value)) != len(value):
            raise ValueError(f"every level must be within 1..5, each once; got {value[:10]}")
        return value

    @field_validator("families")
    @classmethod
    def _families_have_worked_solutions(cls, value: list[str]) -> list[str]:
        from peirce.config import registries
        from peirce.tasks.base import get_family

        registries.check_families(value)
        if len(set(value)) != len(value):
            raise ValueError(f"each family once; got {value}")
        without = [n for n in value if get_family(n).worked_variants == 0]
        if without:
            raise ValueError(f"every family must have worked solutions (deduction, induction, abduction); "
                             f"these have none: {without}")
        return value

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str, info: ValidationInfo) -> str:
        ctx = info.context if isinstance(info.context, dict) and info.context.get("load") else {}
        if not ctx or value in BUILTIN_MODELS or value in ctx.get("pending_paths", ()):
            return value
        if not (Path(value).expanduser() / "config.json").is_file():
            raise ValueError(f"must be {' or '.join(map(repr, BUILTIN_MODELS))} or a Hugging Face folder "
                             "(a directory with config.json)")
        return value

    @model_validator(mode="after")
    def _micro_within_batch(self) -> "SFTConfig":
        if self.micro_batch_size > self.batch_size:
            raise FieldRuleError("micro_batch_size", f"must be <= batch_size ({self.batch_size})",
                                 self.micro_batch_size)
        return self

    def summary(self) -> dict[str, Any]:
        """The fields a report shows next to the warm-up's loss."""
        return {k: getattr(self, k) for k in ("families", "levels", "examples", "epochs", "lr", "batch_size")}
