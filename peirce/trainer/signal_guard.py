"""No-learning-signal guard: say plainly when the learner trains on nothing.

A step has no reward signal when every advantage is zero, which happens when the
rewards it compares are all equal: within every group for group baselines (GRPO,
RLOO, REINFORCE++-group), across the whole batch for the batch-whitened REINFORCE++.
Loss, KL and entropy still move, so a run like that *looks* alive while it learns
nothing. After `window` such steps in a row the guard raises one warning per episode
(a maximal stretch of steps without signal) naming the likely cause read from the
step's own samples, and it counts the steps for metrics.jsonl, Prometheus and the
run summary. Pure: no I/O, no clock; the driver logs and exports what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

Scope = Literal["group", "batch"]

# Likely cause -> what the user should read (and usually do).
CAUSES: dict[str, str] = {
    "temperature_zero": "rollout.temperature is 0: greedy decoding gives every sample of a prompt the same "
                        "response, so each group scores identically; sample with a temperature > 0",
    "single_sample_groups": "rollout.n_samples is 1: a group baseline compares a sample with itself; use "
                            "n_samples >= 2 or a batch baseline (algorithm.advantage=reinforce_pp)",
    "format_never_produced": "no response had the required format (e.g. no <answer>...</answer>): every "
                             "reward is the format-failure value {reward:g}; check the prompt style, "
                             "rollout.max_tokens (responses cut off) and the model",
    "task_too_hard": "every response was well formed but wrong: the task is too hard for the model at this "
                     "level; start at an easier level or a stronger model",
    "all_solved": "every response was correct: the task is solved at this level; move to a harder level",
    "uniform_groups": "every prompt's samples scored identically (some prompts always solved, others always "
                      "failed); more samples per prompt (rollout.n_samples) or a higher temperature",
}


class Scored(Protocol):
    """What the guard reads of a scored sample (peirce.transport.wire.ScoredSample has it)."""

    reward: float
    format_ok: bool
    correct: bool


def signal_scope(advantage: str) -> Scope:
    """Where an estimator's baseline lives: the batch for `reinforce_pp`, the group otherwise."""
    return "batch" if advantage == "reinforce_pp" else "group"


def _uniform(values: Sequence[float]) -> bool:
    return len(set(values)) <= 1  # exact, like the driver's dynamic-sampling filter


def has_signal(groups: Sequence[Sequence[Scored]], scope: Scope) -> bool:
    """Whether any advantage of this batch can be non-zero."""
    if scope == "batch":
        return not _uniform([s.reward for g in groups for s in g])
    return any(not _uniform([s.reward for s in g]) for g in groups)


def infer_cause(groups: Sequence[Sequence[Scored]], temperature: float, scope: Scope = "group") -> str:
    """The most likely reason a batch has no signal (a key of CAUSES), from its own samples."""
    flat = [s for g in groups for s in g]
    if temperature == 0:
        return "temperature_zero"
    if scope == "group" and flat and all(len(g) == 1 for g in groups):
        return "single_sample_groups"
    if flat and not any(s.format_ok for s in flat):
        return "format_never_produced"
    if flat and all(s.correct for s in flat):
        return "all_solved"
    if flat and not any(s.correct for s in flat):
        return "task_too_hard"
    return "uniform_groups"


def explain(cause: str, groups: Sequence[Sequence[Scored]]) -> str:
    rewards = [s.reward for g in groups for s in g]
    return CAUSES[cause].format(reward=rewards[0] if rewards else float("nan"))


@dataclass(frozen=True)
class SignalVerdict:
    """The guard's reading of one learner step."""

    step: int
    has_signal: bool
    streak: int  # consecutive steps without signal, ending at this one (0 when it has signal)
    no_signal: bool  # streak >= window (and the guard is on)
    cause: str | None  # key of CAUSES when the step has no signal
    warning: str | None = None  # log this now (once per episode)
    recovered: str | None = None  # log this now: an episode just ended

    def record(self) -> dict[str, Any]:
        """The metrics.jsonl fields."""
        return {"no_signal_steps": self.streak, "no_signal": self.no_signal, "no_signal_cause": self.cause}


@dataclass
class SignalGuard:
    """Counts steps without reward signal; warns once when `window` in a row (0 = never)."""

    window: int
    scope: Scope = "group"
    temperature: float = 1.0
    streak: int = 0
    total: int = 0  # steps without signal, whole run
    episodes: list[dict[str, Any]] = field(default_factory=list)  # {"start", "end", "steps", "cause"}

    def __post_init__(self) -> None:
        if self.window < 0:
            raise ValueError(f"trainer.no_signal_steps: must be >= 0 (0 disables), got {self.window}")

    def observe(self, step: int, groups: Sequence[Sequence[Scored]]) -> SignalVerdict:
        if has_signal(groups, self.scope):
            recovered = None
            if self.episodes and self.episodes[-1]["end"] is None:
                ep = self.episodes[-1]
                ep["end"] = step - 1
                recovered = (f"learning signal is back at step {step} after {ep['steps']} steps without "
                             f"(steps {ep['start']}-{ep['end']})")
            self.streak = 0
            return SignalVerdict(step, True, 0, False, None, recovered=recovered)
        self.streak += 1
        self.total += 1
        cause = infer_cause(groups, self.temperature, self.scope)
        on = self.window > 0 and self.streak >= self.window
        warning = None
        if on and self.streak == self.window:
            self.episodes.append({"start": step - self.window + 1, "end": None, "steps": self.streak,
                                  "cause": cause})
            warning = (f"no learning signal: {self.streak} consecutive learner steps (up to step {step}) had "
                       f"zero reward variance ({'batch' if self.scope == 'batch' else 'every group'}), so every "
                       f"advantage is 0 and the policy is not learning from rewards. Likely cause: "
                       f"{explain(cause, groups)}.")
        elif on:
            self.episodes[-1]["steps"] = self.streak
            self.episodes[-1]["cause"] = cause
        return SignalVerdict(step, False, self.streak, on, cause, warning=warning)

    def summary(self) -> dict[str, Any]:
        """For run_summary.json: whether (and how long, and why) the run went without signal."""
        return {"no_signal": bool(self.episodes), "no_signal_at_end": self.window > 0 and self.streak >= self.window,
                "no_signal_steps": self.total, "no_signal_window": self.window,
                "no_signal_episodes": [dict(e) for e in self.episodes]}

    # -- resume ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"streak": self.streak, "total": self.total, "episodes": [dict(e) for e in self.episodes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.streak = int(state.get("streak", 0))
        self.total = int(state.get("total", 0))
        self.episodes = [dict(e) for e in state.get("episodes", [])]
