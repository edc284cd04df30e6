"""`algorithm.meta`: MASA settings, validated by pydantic (torch-free, like peirce.config.schema).

Off by default (`enabled: false`). Pass rates are predicted as an integer count out of K
(`k`); the gating thresholds compare *fractions* (count / K), so they mean the same for
any K. Settings that act on predictions before solving (gating, cutoff, hint) need
`mode: sequential`; `switch_step` keeps the first steps parallel (the v2 paper: 80).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

Int = Annotated[int, Strict()]

DEFAULT_META_TEMPLATE = """\
Do not solve the problem below. Assess it before anyone solves it.

First think step by step inside <meta> ... </meta>, in detail: which notions (concepts, \
rules, theorems or techniques) a solution needs, how likely an attempt is to succeed, and \
how many tokens a correct solution takes; give a short example for each.
Do not list notions that are already written in the problem statement.

After </meta>, output exactly one JSON object with these three keys:
- "notions": a list of strings, the notions a solution needs;
- "pass_rate": an integer from 0 to {k}, how many of {k} independent attempts at this problem would succeed;
- "solution_length": an integer, the number of tokens of a correct solution.

Problem: {problem}"""

DEFAULT_HINT_TEMPLATE = "The problem could be solved using the following notions: {notions}."

MAX_TEMPLATE_CHARS = 20_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def _rule(field: str, rule: str, value: object) -> ValueError:
    """peirce.config's FieldRuleError (the loader names the nested field), imported late:
    peirce.config imports this module through its schema, so a top-level import is a cycle."""
    from peirce.config.errors import FieldRuleError

    return FieldRuleError(field, rule, value)


def _needs(template: str, placeholders: tuple[str, ...]) -> str:
    missing = [p for p in placeholders if "{" + p + "}" not in template]
    if missing:
        raise ValueError("must contain the placeholder(s) " + ", ".join("{" + p + "}" for p in missing))
    return template


class GatingConfig(_Strict):
    """Skip a prompt's solution rollouts when its meta rollouts agree the group would have
    zero variance (all solved or none solved): such a group gives GRPO no gradient."""

    enabled: bool = Field(False, description="Gate prompts on the meta predictions (needs meta.mode=sequential).")
    sigma: float = Field(0.1, ge=0, le=1, description="Gate only when the population std of the predicted pass "
                         "fractions (pass_rate / k) is below this (0 never gates).")
    zero_tolerance: float = Field(0.0, ge=0, lt=0.5, description="Mean predicted fraction <= this counts as "
                                  "'at 0' (all attempts fail); 0 = exactly 0 (the v2 paper).")
    full_tolerance: float = Field(0.0, ge=0, lt=0.5, description="Mean predicted fraction >= 1 - this counts as "
                                  "'at K' (all attempts succeed); 0 = exactly K.")
    min_valid_share: float = Field(1.0, gt=0, le=1, description="Gate only when at least this share of the M meta "
                                   "rollouts gave a valid pass_rate (1 = all of them).")
    audit_share: float = Field(0.1, ge=0, le=1, description="Share of gated prompts solved anyway (chosen by a hash "
                               "of prompt id and seed) so gating precision and recall are measured; 0 = none.")


class CutoffConfig(_Strict):
    """Cap each solution request at factor x the mean predicted solution length."""

    enabled: bool = Field(False, description="Cap solution max_tokens from the predictions (needs meta.mode=sequential).")
    factor: float = Field(2.0, gt=0, le=100, description="max_tokens = round(factor x mean predicted length) "
                          "(v1 paper: 2; v2 ablates 0.5/1.0/1.5).")
    min_tokens: Int = Field(64, ge=1, description="Lower clamp of the cap, so a tiny prediction cannot starve a solution.")
    max_tokens: Int | None = Field(None, ge=1, description="Upper clamp of the cap and the fallback when no "
                                   "prediction is valid; null = rollout.max_tokens.")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> "CutoffConfig":
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise _rule("min_tokens", f"must be <= cutoff.max_tokens ({self.max_tokens})", self.min_tokens)
        return self


class HintConfig(_Strict):
    """Append the predicted notions to the solution prompt (v2 paper; released code's meta_feedin)."""

    enabled: bool = Field(False, description="Add the hint sentence to each solution prompt (needs meta.mode=sequential).")
    template: str = Field(DEFAULT_HINT_TEMPLATE, min_length=1, max_length=MAX_TEMPLATE_CHARS,
                          description="Hint text; {notions} becomes the notions joined by ', '.")
    max_notions: Int = Field(5, ge=1, le=64, description="Notions in the hint at most: those most meta rollouts predicted.")

    @field_validator("template")
    @classmethod
    def _has_notions(cls, value: str) -> str:
        return _needs(value, ("notions",))


class ExpertConfig(_Strict):
    """Behaviour cloning on each prompt's best meta trajectory, rewritten with the true
    pass rate and length (v1 paper's expert SFT; not in v2)."""

    enabled: bool = Field(False, description="Collect expert meta trajectories and take SFT steps on them.")
    every: Int = Field(10, ge=1, description="An SFT step every this many learner steps (when the buffer is not empty).")
    lr: float = Field(1e-6, gt=0, le=1, description="Learning rate of the SFT step (its own, not learner.lr).")
    buffer_size: Int = Field(256, ge=1, le=1_000_000, description="FIFO buffer of expert examples; the oldest drop out.")
    min_score: float = Field(0.2, ge=0, le=1, description="A prompt's best meta rollout is kept only when its meta "
                             "reward is >= this (released code: 0.2).")


class MetaConfig(_Strict):
    """MASA meta rollouts beside the solution rollouts (one GRPO group each per prompt)."""

    enabled: bool = Field(False, description="Make meta rollouts and train on them.")
    meta_rollouts: Int = Field(8, ge=1, le=1024, description="M: meta rollouts per prompt (v2: 8; released code: 16).")
    solution_rollouts: Int = Field(16, ge=1, le=1024, description="G: solution rollouts per prompt (v2 and released: 16).")
    k: Int = Field(8, ge=1, le=1000, description="K: pass_rate is predicted as a count of K attempts (0..K).")
    base: float = Field(0.01, gt=0, lt=1, description="b: pass-rate reward = b ** |true fraction - pass_rate / K|.")
    meta_max_tokens: Int | None = Field(None, ge=1, description="Response limit of meta rollouts; null = rollout.max_tokens.")
    prompt_template: str = Field(DEFAULT_META_TEMPLATE, min_length=1, max_length=MAX_TEMPLATE_CHARS,
                                 description="Meta prompt (user turn); {problem} is the problem text, {k} is K. "
                                 "Other braces are literal.")
    mode: Literal["parallel", "sequential"] = Field("parallel", description="parallel: meta and solution rollouts "
                                                    "at once; sequential: meta first, then gate/cutoff/hint, then solutions.")
    switch_step: Int = Field(0, ge=0, description="mode=sequential: learner steps before this one still run parallel "
                             "(the predictions need training first; v2: 80).")
    gating: GatingConfig = Field(default_factory=GatingConfig, description="Prediction-based gating.")
    cutoff: CutoffConfig = Field(default_factory=CutoffConfig, description="Length cutoff of solution rollouts.")
    hint: HintConfig = Field(default_factory=HintConfig, description="Notion hint in the solution prompt.")
    expert: ExpertConfig = Field(default_factory=ExpertConfig, description="Expert behaviour cloning.")

    @field_validator("prompt_template")
    @classmethod
    def _has_placeholders(cls, value: str) -> str:
        return _needs(value, ("problem", "k"))

    @model_validator(mode="after")
    def _sequential_features(self) -> "MetaConfig":
        if self.mode == "parallel":
            on = [name for name in ("gating", "cutoff", "hint") if getattr(self, name).enabled]
            if on:
                raise _rule("mode", f"{', '.join(f'{n}.enabled' for n in on)} needs mode=sequential "
                        "(parallel mode makes the solutions before any prediction exists)", self.mode)
        return self

    def mode_at(self, step: int) -> Literal["parallel", "sequential"]:
        """The mode learner step `step` runs in (sequential starts at switch_step)."""
        return "sequential" if self.mode == "sequential" and step >= self.switch_step else "parallel"
