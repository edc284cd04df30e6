"""One prompt's MASA plan as a pure state machine: which rollouts to request, and, once the
results are in, the two reward groups to train on.

    parallel:    start -> [meta x M, solutions x G] -> (both results, either order) -> done
    sequential:  start -> [meta x M] -> predictions -> gate?
                     gated, not audited -> skipped (no groups: a zero-variance group
                                           gives no gradient, and without solutions the
                                           meta rollouts have nothing to be scored on)
                     otherwise -> [solutions x G, max_tokens from the cutoff, hint]
                                -> results -> done

A driver calls `MetaPlanner.start`, sends the returned requests to its rollout workers,
and feeds the results back through `on_meta` (the raw meta response texts) and
`on_solutions` (each solution scored by the task's own reward). Every call returns a new
`PromptState` (a msgspec Struct: checkpoint it to resume a run mid-sequence, then
`requests(state)` gives what is still outstanding) and, at the end, a `PromptResult`
with the groups: kind "meta" (rewards from peirce.masa.reward) and kind "solution" (the
task's rewards), normalised separately by the advantage estimator, each reward in the
order the driver passed the responses.

The gating decision is also computed when it is not enforced (parallel mode, or gating
off): `GateRecord.enforced` is False there, and since every group is solved, those
records measure the gate's precision and recall before it is switched on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from peirce.masa import cutoff, gating, prompt
from peirce.masa.config import MetaConfig
from peirce.masa.expert import ExpertExample, best_expert
from peirce.masa.parse import parse_prediction
from peirce.masa.reward import meta_reward
from peirce.masa.types import MetaPrediction, MetaReward, Solution

Phase = Literal["awaiting_meta", "awaiting_solutions", "awaiting_both", "skipped", "done"]


class PlanError(ValueError):
    """A driver called the plan out of order or with inconsistent results."""


class MetaRequest(msgspec.Struct, frozen=True, tag="meta"):
    """Generate n meta rollouts for `prompt` (the meta prompt's user text)."""

    prompt_id: str
    prompt: str
    n: int
    max_tokens: int


class SolutionRequest(msgspec.Struct, frozen=True, tag="solutions"):
    """Generate n solution rollouts of the prompt's own task prompt; append `hint` to its
    user text when set (peirce.masa.prompt.with_hint)."""

    prompt_id: str
    n: int
    max_tokens: int
    hint: str | None = None


Request = MetaRequest | SolutionRequest


class PromptState(msgspec.Struct, frozen=True, kw_only=True):
    """Where one prompt stands; None fields are not known yet."""

    prompt_id: str
    problem: str
    step: int
    mode: Literal["parallel", "sequential"]
    phase: Phase
    predictions: tuple[MetaPrediction, ...] | None = None
    solutions: tuple[Solution, ...] | None = None
    solution_rewards: tuple[float, ...] | None = None
    gate: gating.GateDecision | None = None
    audited: bool = False
    max_tokens: int | None = None  # of the solution request, once decided
    hint: str | None = None


class Group(msgspec.Struct, frozen=True):
    prompt_id: str
    kind: Literal["meta", "solution"]
    rewards: tuple[float, ...]


class GateRecord(msgspec.Struct, frozen=True):
    """For GatingStats.record(gated, zero_var); enforced: the decision actually skipped (or
    would have skipped, when audited) the solutions, rather than only being measured."""

    gated: bool
    zero_var: bool | None
    enforced: bool


class PromptResult(msgspec.Struct, frozen=True):
    prompt_id: str
    groups: tuple[Group, ...]  # (meta, solution), or () when skipped
    meta_rewards: tuple[MetaReward, ...]  # per meta rollout, with the parts
    gate: GateRecord | None
    expert: ExpertExample | None  # this prompt's behaviour-cloning example (meta.expert.enabled)


class Transition(msgspec.Struct, frozen=True):
    state: PromptState
    requests: tuple[Request, ...] = ()
    result: PromptResult | None = None


_STATE_DECODER = msgspec.json.Decoder(PromptState)


def encode_state(state: PromptState) -> bytes:
    return msgspec.json.encode(state)


def decode_state(data: bytes) -> PromptState:
    """Raises msgspec.ValidationError naming the bad field."""
    return _STATE_DECODER.decode(data)


class MetaPlanner:
    """The transitions, for one run's settings. `default_max_tokens` is rollout.max_tokens;
    `seed` fixes which gated prompts are audited."""

    def __init__(self, cfg: MetaConfig, *, seed: int, default_max_tokens: int) -> None:
        if default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {default_max_tokens}")
        self.cfg = cfg
        self.seed = seed
        self.default_max_tokens = default_max_tokens

    def start(self, prompt_id: str, problem: str, step: int) -> Transition:
        mode = self.cfg.mode_at(step)
        phase: Phase = "awaiting_both" if mode == "parallel" else "awaiting_meta"
        state = PromptState(prompt_id=prompt_id, problem=problem, step=step, mode=mode, phase=phase,
                            max_tokens=self.default_max_tokens if mode == "parallel" else None)
        return Transition(state=state, requests=self.requests(state))

    def requests(self, state: PromptState) -> tuple[Request, ...]:
        """The rollouts `state` still waits for (what to re-issue after a resume)."""
        out: list[Request] = []
        if state.phase in ("awaiting_meta", "awaiting_both") and state.predictions is None:
            out.append(MetaRequest(prompt_id=state.prompt_id, prompt=prompt.meta_prompt(state.problem, self.cfg),
                                   n=self.cfg.meta_rollouts, max_tokens=self.cfg.meta_max_tokens or self.default_max_tokens))
        if state.phase in ("awaiting_solutions", "awaiting_both") and state.solutions is None:
            out.append(SolutionRequest(prompt_id=state.prompt_id, n=self.cfg.solution_rollouts,
                                       max_tokens=state.max_tokens or self.default_max_tokens, hint=state.hint))
        return tuple(out)

    def on_meta(self, state: PromptState, responses: Sequence[str]) -> Transition:
        """Record the meta responses (raw texts, in the order of the driver's samples)."""
        if state.phase not in ("awaiting_meta", "awaiting_both") or state.predictions is not None:
            raise PlanError(f"prompt {state.prompt_id!r}: meta results arrived in phase {state.phase!r} "
                            f"(already recorded: {state.predictions is not None})")
        if not responses:
            raise PlanError(f"prompt {state.prompt_id!r}: no meta responses (need >= 1)")
        predictions = tuple(parse_prediction(r, self.cfg.k) for r in responses)
        decision = gating.decide([p.pass_rate for p in predictions], self.cfg.k, self.cfg.gating)
        state = msgspec.structs.replace(state, predictions=predictions, gate=decision)
        if state.phase == "awaiting_both":
            return self._maybe_finish(state)
        return self._after_predictions(state)

    def on_solutions(self, state: PromptState, solutions: Sequence[Solution], rewards: Sequence[float]) -> Transition:
        """Record the solutions with their task rewards (same order, same length)."""
        if state.phase not in ("awaiting_solutions", "awaiting_both") or state.solutions is not None:
            raise PlanError(f"prompt {state.prompt_id!r}: solution results arrived in phase {state.phase!r} "
                            f"(already recorded: {state.solutions is not None})")
        if not solutions or len(solutions) != len(rewards):
            raise PlanError(f"prompt {state.prompt_id!r}: need >= 1 solution and one reward each, got "
                            f"{len(solutions)} solutions and {len(rewards)} rewards")
        state = msgspec.structs.replace(state, solutions=tuple(solutions), solution_rewards=tuple(map(float, rewards)))
        return self._maybe_finish(state)

    def _enforced(self, state: PromptState) -> bool:
        return state.mode == "sequential" and self.cfg.gating.enabled

    def _after_predictions(self, state: PromptState) -> Transition:
        assert state.predictions is not None and state.gate is not None
        if self._enforced(state) and state.gate.gated:
            if not gating.audited(state.prompt_id, self.seed, self.cfg.gating.audit_share):
                state = msgspec.structs.replace(state, phase="skipped")
                result = PromptResult(prompt_id=state.prompt_id, groups=(), meta_rewards=(),
                                      gate=GateRecord(gated=True, zero_var=None, enforced=True), expert=None)
                return Transition(state=state, result=result)
            state = msgspec.structs.replace(state, audited=True)
        limit = cutoff.solution_max_tokens([p.solution_length for p in state.predictions], self.cfg.cutoff,
                                           self.default_max_tokens)
        hint_text = prompt.hint(state.predictions, self.cfg.hint) if self.cfg.hint.enabled else None
        state = msgspec.structs.replace(state, phase="awaiting_solutions", max_tokens=limit, hint=hint_text)
        return Transition(state=state, requests=self.requests(state))

    def _maybe_finish(self, state: PromptState) -> Transition:
        if state.predictions is None or state.solutions is None:
            return Transition(state=state)  # parallel mode, the other half is still out
        assert state.solution_rewards is not None and state.gate is not None
        cfg = self.cfg
        scored = [meta_reward(p, state.problem, state.solutions, k=cfg.k, base=cfg.base) for p in state.predictions]
        groups = (Group(state.prompt_id, "meta", tuple(r.reward for r in scored)),
                  Group(state.prompt_id, "solution", state.solution_rewards))
        record = GateRecord(gated=state.gate.gated, zero_var=gating.zero_variance([s.correct for s in state.solutions]),
                            enforced=self._enforced(state))
        expert = None
        if cfg.expert.enabled:
            expert = best_expert(state.prompt_id, prompt.meta_prompt(state.problem, cfg), list(zip(state.predictions, scored)),
                                 state.solutions, k=cfg.k, min_score=cfg.expert.min_score, step=state.step)
        state = msgspec.structs.replace(state, phase="done")
        return Transition(state=state, result=PromptResult(prompt_id=state.prompt_id, groups=groups,
                                                           meta_rewards=tuple(scored), gate=record, expert=expert))
