"""Stage B merge settings: which specialists, which mergekit method, which weights.

Torch-free (pydantic only) so configs validate instantly in the CLI and in a Ray driver.
File-system checks (does each folder exist?) happen in `peirce.merge.merge.run_merge`,
where the folders are read, not here.

Normalisation, spelled out because it changes the numbers: mergekit's `linear` divides
by the sum of weights unless told not to, so the reference weights deduction 1.0,
induction 0.2, abduction 0.1 act as 1.0/1.3, 0.2/1.3, 0.1/1.3 = 0.769/0.154/0.077.
`task_arithmetic` does not normalise by default (merged = base + sum_i w_i (m_i - base));
`ties` does, per entry, by the weights of the models that agree with the elected sign.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from peirce.config.loader import ConfigError, format_validation_error

MergeMethod = Literal["linear", "task_arithmetic", "ties"]
METHODS: tuple[str, ...] = ("linear", "task_arithmetic", "ties")
METHODS_WITH_BASE: frozenset[str] = frozenset({"task_arithmetic", "ties"})
# mergekit 0.1.5's own default of `normalize` per method (merge_methods/linear.py, registry.py).
MERGEKIT_DEFAULT_NORMALIZE: dict[str, bool] = {"linear": True, "task_arithmetic": False, "ties": True}
# The paper's Stage B weights (arXiv 2505.10554).
REFERENCE_WEIGHTS: dict[str, float] = {"deduction": 1.0, "induction": 0.2, "abduction": 0.1}


class MergeConfig(BaseModel):
    """One mergekit merge of specialist HF folders into one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: MergeMethod = Field(
        "linear",
        description="mergekit merge method: linear (weighted average), task_arithmetic "
        "(base + sum_i w_i (m_i - base)) or ties (trim to `density`, elect a sign per entry, "
        "average the deltas that agree).",
    )
    models: dict[str, str] = Field(
        ...,
        min_length=1,
        description="Specialist name -> local HF folder (e.g. deduction: runs/ded/final). "
        "Local folders only: hub ids are never fetched.",
    )
    weights: dict[str, float] = Field(
        default_factory=lambda: dict(REFERENCE_WEIGHTS),
        description="Specialist name -> weight; keys must equal those of `models`. Default: the "
        "paper's deduction 1.0, induction 0.2, abduction 0.1, which `linear` normalises to "
        "effective 0.769/0.154/0.077 (see `normalize`).",
    )
    normalize: bool | None = Field(
        None,
        description="Divide by the sum of the weights. Unset = mergekit's default for the method: "
        "linear true (so 1.0/0.2/0.1 acts as 0.769/0.154/0.077), ties true (per entry, over the "
        "models agreeing with the elected sign), task_arithmetic false.",
    )
    base_model: str | None = Field(
        None,
        description="Local HF folder the task vectors are taken against (usually the instruct "
        "model the specialists were trained from). Required for task_arithmetic and ties; "
        "not used by linear.",
    )
    density: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="ties only: fraction of each task vector's entries kept, by magnitude (the "
        "rest are zeroed before the sign election). Unset = 1.0 (keep all).",
    )
    dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype of the merge inputs and of the written weights."
    )

    @model_validator(mode="after")
    def _consistent(self) -> MergeConfig:
        models, weights = set(self.models), set(self.weights)
        if models != weights:
            parts = [f"weights keys {sorted(weights)} must equal models keys {sorted(models)}"]
            if models - weights:
                parts.append(f"missing weights for {sorted(models - weights)}")
            if weights - models:
                parts.append(f"weights for unknown models {sorted(weights - models)}")
            raise ValueError("; ".join(parts))
        for name, path in self.models.items():
            if not path.strip():
                raise ValueError(f"models.{name}: path is empty")
        for name, w in self.weights.items():
            if not math.isfinite(w):
                raise ValueError(f"weights.{name}: must be a finite number, got {w!r}")
        if self.method in METHODS_WITH_BASE and not self.base_model:
            raise ValueError(f"base_model is required for method={self.method} (the folder task vectors are taken against)")
        if self.method == "linear" and self.base_model is not None:
            raise ValueError("base_model is not used by method=linear; remove it or use task_arithmetic/ties")
        if self.density is not None and self.method != "ties":
            raise ValueError(f"density applies only to method=ties, got method={self.method} with density={self.density}")
        if self.effective_normalize and abs(sum(self.weights.values())) < 1e-8:
            raise ValueError(f"normalize divides by the sum of weights, which is 0 for weights {self.weights}")
        return self

    @property
    def effective_normalize(self) -> bool:
        """`normalize` with mergekit's per-method default filled in."""
        return MERGEKIT_DEFAULT_NORMALIZE[self.method] if self.normalize is None else self.normalize

    def effective_weights(self) -> dict[str, float]:
        """The coefficient each specialist gets in linear/task_arithmetic (ties: before masking)."""
        if not self.effective_normalize:
            return dict(self.weights)
        total = sum(self.weights.values())
        return {k: w / total for k, w in self.weights.items()}


def parse_merge_config(data: Mapping[str, Any] | MergeConfig, source: str = "merge config") -> MergeConfig:
    """Validate a plain dict (YAML, a Ray call) into a MergeConfig; errors name the field."""
    if isinstance(data, MergeConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    try:
        return MergeConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
