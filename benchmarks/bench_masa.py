"""MASA vs plain GRPO: solution tokens generated and wall time until both reach the same
mean reward (the paper reports 1.28x faster to the same accuracy). Two real training runs
(Ray, vLLM, DeepSpeed, ZeroMQ) with the same seed, model, task and budgets:

- grpo: `rollout.n_samples` = G solutions per prompt, nothing else;
- masa: M meta rollouts per prompt beside the same G solutions; parallel for the first
  `switch_step` steps, then sequential with gating and the length cutoff on, and expert
  behaviour cloning on (so the model can learn to predict). The notion hint is off: the
  comparison is about what gating and the cutoff save.

Measured per learner step (metrics.jsonl rows, plus a tally wrapped around the driver's
`planner.on_rollout_result` and `planner.admit`, as bench_async wraps `admit`):
- solution tokens generated so far: the response tokens of every solution sample a rollout
  worker delivered up to that step's time (also the ones a stale drop or retry wasted);
  a gated prompt's solutions are never generated, so they count nothing; an audited gated
  prompt's do. Meta tokens are counted apart (`meta_tokens`) and not in the comparison;
- wall seconds since start-up ended, i.e. since the run's first rollout result arrived
  (actor start-up and the engine's load and warm-up, tens of seconds here and the same
  work for both runs, would otherwise swamp a few-second comparison; it is `startup_s`);
- cross-check: the solution tokens of the batches trained so far (`response_tokens`);
  "generated" runs ahead of it by what is in flight, and also counts wasted groups;
- the step's mean solution reward (`reward_mean`: solutions only).

Target: the running mean of the reward over `window` steps; each run's best such value,
and the target is the lower of the two (so it is a level both runs reached; stated in the
output). For each run: the first step whose running mean reaches it, with its solution
tokens and wall seconds; ratio = GRPO / MASA (> 1: MASA needed less). A run that never
reaches the target, or a zero denominator, gives `value: null` and a `reason`.

Also reported: prompts gated, gating precision / recall (the audited sample's), the mean
solution max_tokens of the sequential requests, and how many meta predictions were valid
and how many solution caps came from a prediction rather than the fallback.

Caveats (read before the numbers):
- On the tiny random Llama (`--quick`, and the default full mode) meta predictions are
  essentially never valid JSON, so gating never fires (no valid pass rate), expert BC gets
  no example (it clones only parsed predictions), and every cap is the cutoff's fallback.
  `cutoff.max_tokens` is null here, so that fallback is `rollout.max_tokens`, GRPO's own
  limit: a clamp below it would "save" tokens that a plain lower limit would save as well,
  without any prediction. Hence on the tiny model the benchmark measures MASA's overhead
  (meta rollouts, sequential latency, a loss diluted by meta tokens), not its savings;
  `valid_pass_rate_share` and `cap_from_prediction_share` say which case a result is.
  Only a model that can write the JSON (`--model PATH`, with `--set` for budgets that
  fit it: max_model_len, max_tokens, meta_max_tokens) tests the paper's claim.
- The reward is the training reward of the groups each step trained on, not a held-out
  evaluation; with gating on, MASA's trained prompts are a selection (the predicted
  zero-variance ones are left out), which biases its mean reward.
- The reward curves repeat: a rerun of the same settings trains the same batches on the
  same samples (seeded groups, admission-order batches; two `--quick` runs here matched to
  every digit), while the token counts at a step's end and the wall times vary with what
  happened to be in flight. But a curve is sensitive to any setting: with
  `algorithm.entropy_coef=0` instead of 0.001, GRPO's last reward here was 0.23, not 0.48.
  One seed is one sample; the full mode runs three and reports the median ratio.
- MASA's and GRPO's first `switch_step` steps train on the same solutions (step 1's reward
  is equal); MASA's batches also hold the meta samples, whose rewards are all 0 on the
  tiny model (zero advantage), so its policy-gradient term is a smaller part of a
  token-mean loss that still carries the entropy bonus over every token.
- Wall time on a shared 2-core CPU box is noisy (other processes' load shows up as slow
  steps); the random model rarely samples EOS, so responses run to max_tokens.

Sizes: 4 prompts per step, G = M = 4, max_tokens 32 for solutions and meta rollouts
(the meta prompt is ~210 tokens, model.max_model_len 256), max_staleness 1, lr 3e-3;
`--quick`: 20 steps, seed 0, window 3, switch_step 2; full: 40 steps, seeds 0 1 2,
window 5, switch_step 4. `--model`, `--steps`, `--seeds` and `--set KEY=VALUE` (a config
override for both runs) change them.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, parse_args  # noqa: E402

BENCH = "masa"
PAPER_SPEEDUP = 1.28
K = 8  # algorithm.meta.k (the default)
SIZES = {"prompts_per_step": 4, "solution_rollouts": 4, "meta_rollouts": 4, "max_tokens": 32, "meta_max_tokens": 32}
LR = 3.0e-3  # the smoke profile's 1e-3 barely moves the tiny model's reward within a quick run


# ---------------------------------------------------------------- pure: curves, target, first reach


@dataclass(frozen=True)
class StepPoint:
    """One learner step of a run: cumulative tokens generated and wall seconds at its end."""

    step: int
    solution_tokens: int  # generated (delivered by rollout workers) by the step's end
    meta_tokens: int
    wall_s: float
    reward: float
    trained_solution_tokens: int = 0  # in the batches trained up to this step (metrics.jsonl)


def running_means(rewards: Sequence[float], window: int) -> list[float | None]:
    """Mean of the last `window` rewards at each step; None until `window` steps exist."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return [None if i + 1 < window else statistics.fmean(rewards[i + 1 - window: i + 1])
            for i in range(len(rewards))]


def best_running_mean(points: Sequence[StepPoint], window: int) -> float | None:
    means = [m for m in running_means([p.reward for p in points], window) if m is not None]
    return max(means) if means else None


def choose_target(runs: dict[str, Sequence[StepPoint]], window: int) -> tuple[float | None, str]:
    """(the lower of the runs' best running-mean rewards, the rule as text); None with the
    reason when a run has fewer than `window` steps."""
    best = {name: best_running_mean(points, window) for name, points in runs.items()}
    short = sorted(name for name, b in best.items() if b is None)
    if short:
        return None, f"{', '.join(short)}: fewer than window={window} steps, no running mean"
    low = min(best, key=lambda name: (best[name], name))
    return best[low], (f"min over runs of the best {window}-step running mean of reward_mean "
                       f"({low}'s, the lower)")


def first_reach(points: Sequence[StepPoint], target: float, window: int) -> StepPoint | None:
    """The first step whose `window`-step running mean is >= target (None: never)."""
    for point, mean in zip(points, running_means([p.reward for p in points], window)):
        if mean is not None and mean >= target - 1e-12:  # the target is one of these means
            return point
    return None


def speedup(grpo: float | None, masa: float | None, what: str) -> tuple[float | None, str | None]:
    """(GRPO / MASA, None), or (None, why) when a run never reached the target or MASA's is 0."""
    missing = [name for name, v in (("grpo", grpo), ("masa", masa)) if v is None]
    if missing:
        return None, f"{' and '.join(missing)} never reached the target reward"
    assert grpo is not None and masa is not None
    if masa <= 0:
        return None, f"masa's {what} at the target is {masa}: no ratio"
    return round(grpo / masa, 4), None


def cumulative_at(events: Sequence[tuple[float, int, int]], t: float) -> tuple[int, int]:
    """(solution, meta) tokens of the events at or before time `t`."""
    sol = meta = 0
    for when, s, m in events:
        if when <= t:
            sol, meta = sol + s, meta + m
    return sol, meta


def step_points(rows: Sequence[dict[str, Any]], events: Sequence[tuple[float, int, int]], t0: float) -> list[StepPoint]:
    """One StepPoint per metrics row (its `time` is when the step finished)."""
    out, trained = [], 0
    for r in rows:
        sol, meta = cumulative_at(events, r["time"])
        trained += int(r["response_tokens"])
        out.append(StepPoint(step=int(r["step"]), solution_tokens=sol, meta_tokens=meta,
                             wall_s=round(r["time"] - t0, 3), reward=float(r["reward_mean"]),
                             trained_solution_tokens=trained))
    return out


# ---------------------------------------------------------------- the tally around the driver's planner


@dataclass
class GenerationTally:
    """Wraps `planner.on_rollout_result` and `planner.admit`: timestamped delivered response
    tokens (solution / meta), each solution request's max_tokens and where it came from
    ("admission": GRPO or MASA parallel; "prediction" / "fallback": a sequential cap from
    a valid predicted length or without one; "retry"), and meta prediction validity."""

    planner: Any
    k: int = K
    clock: Callable[[], float] = time.time
    events: list[tuple[float, int, int]] = field(default_factory=list)
    caps: list[tuple[int, int, str]] = field(default_factory=list)  # (max_tokens, n, source)
    meta_samples: int = 0
    valid_pass_rate: int = 0
    valid_length: int = 0
    gated: int = 0

    def __post_init__(self) -> None:
        self._on_rollout, self._admit = self.planner.on_rollout_result, self.planner.admit
        self.planner.on_rollout_result, self.planner.admit = self.on_rollout_result, self.admit

    def admit(self, source: Any) -> list:
        submits = self._admit(source)
        self._note_caps(submits, "admission")
        return submits

    def on_rollout_result(self, gid: str, result: Any) -> list:
        from peirce.masa.ids import is_meta_group
        from peirce.masa.parse import parse_prediction
        from peirce.trainer.planner import Delivered, Gated
        from peirce.transport.wire import RolloutSample

        decisions = self._on_rollout(gid, result)
        if not isinstance(result, Delivered):
            return decisions
        samples = [m for m in result.messages if isinstance(m, RolloutSample)]
        tokens = sum(len(s.response_token_ids) for s in samples)
        if not is_meta_group(gid):
            self.events.append((self.clock(), tokens, 0))
            return decisions
        self.events.append((self.clock(), 0, tokens))
        predictions = [parse_prediction(s.completion, self.k) for s in samples]
        self.meta_samples += len(predictions)
        self.valid_pass_rate += sum(p.pass_rate is not None for p in predictions)
        self.valid_length += sum(p.solution_length is not None for p in predictions)
        self.gated += sum(isinstance(d, Gated) for d in decisions)
        has_length = any(p.solution_length is not None for p in predictions)
        self._note_caps(decisions, "prediction" if has_length else "fallback")
        return decisions

    def _note_caps(self, decisions: list, source: str) -> None:
        from peirce.masa.ids import is_meta_group
        from peirce.trainer.planner import Retry, Submit

        for d in decisions:
            kind = "retry" if isinstance(d, Retry) else source
            d = d.submit if isinstance(d, Retry) else d
            if isinstance(d, Submit) and d.queue == "rollout" and not is_meta_group(d.gid):
                msg = d.messages[0]
                self.caps.append((msg.sampling.max_tokens, msg.n_samples, kind))


# ---------------------------------------------------------------- runs


def run_config(kind: str, *, model: str, steps: int, seed: int, switch_step: int, run_dir: Path) -> dict[str, Any]:
    """The override values of one run; both kinds share everything but `algorithm.meta`."""
    from peirce.config.profiles import SMOKE_TRAIN

    values = {**SMOKE_TRAIN, "model.path": model, "name": f"masa-bench-{kind}", "run_dir": str(run_dir),
              "trainer.max_steps": steps, "trainer.seed": seed, "tasks.n_per_level": 2000,
              "rollout.prompts_per_step": SIZES["prompts_per_step"], "rollout.n_samples": SIZES["solution_rollouts"],
              "rollout.max_tokens": SIZES["max_tokens"], "async.max_staleness": 1, "learner.lr": LR}
    if kind == "masa":
        m = "algorithm.meta."
        values.update({m + "enabled": True, m + "meta_rollouts": SIZES["meta_rollouts"],
                       m + "solution_rollouts": SIZES["solution_rollouts"], m + "k": K,
                       m + "meta_max_tokens": SIZES["meta_max_tokens"], m + "mode": "sequential",
                       m + "switch_step": switch_step, m + "gating.enabled": True, m + "cutoff.enabled": True,
                       m + "cutoff.factor": 2.0, m + "cutoff.min_tokens": 1, m + "cutoff.max_tokens": "null",
                       m + "hint.enabled": False, m + "expert.enabled": True, m + "expert.every": 2,
                       m + "expert.lr": 1.0e-4})
    return values


def train_once(kind: str, root: Path, extra: Sequence[str] = (), **kw: Any) -> dict[str, Any]:
    from peirce.config import TrainConfig, load_config
    from peirce.config.profiles import as_overrides
    from peirce.trainer.orchestrator import Orchestrator
    from peirce.trainer.run_dir import RunDir

    cfg = load_config(TrainConfig, None, [*as_overrides(run_config(kind, run_dir=root / kind, **kw)), *extra])
    t_start = time.time()
    orch = Orchestrator(cfg, progress=False)
    tally = GenerationTally(orch.planner)
    orch.run()
    rows = RunDir(Path(cfg.run_dir)).read_metrics()
    if not rows or not tally.events:
        raise RuntimeError(f"{kind}: {len(rows)} learner steps logged and {len(tally.events)} rollout results seen")
    t0 = tally.events[0][0]  # start-up ends with the first rollout result: the engine has loaded and warmed up
    return {"rows": rows, "tally": tally, "t0": t0, "startup_s": round(t0 - t_start, 2),
            "points": step_points(rows, tally.events, t0)}


def _share(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def masa_fields(run: dict[str, Any]) -> dict[str, Any]:
    """Gating, prediction and cap numbers of the MASA run (from the tally and metrics.jsonl)."""
    tally, rows = run["tally"], run["rows"]
    last = rows[-1]
    seq = [(cap, n) for cap, n, src in tally.caps if src in ("prediction", "fallback")]
    from_pred = sum(1 for _, _, src in tally.caps if src == "prediction")
    return {"prompts_gated": sum(r.get("meta/prompts_gated", 0) for r in rows), "gated_seen": tally.gated,
            "prompts_audited": sum(r.get("meta/prompts_audited", 0) for r in rows),
            "gated_share": last.get("meta/gated_share"), "gating_precision": last.get("meta/gating_precision"),
            "gating_recall": last.get("meta/gating_recall"),
            "solution_max_tokens_mean_sequential": round(statistics.fmean(c for c, _ in seq), 3) if seq else None,
            "sequential_requests": len(seq), "cap_from_prediction_share": _share(from_pred, len(seq)),
            "meta_samples": tally.meta_samples, "valid_pass_rate_share": _share(tally.valid_pass_rate,
                                                                                 tally.meta_samples),
            "valid_length_share": _share(tally.valid_length, tally.meta_samples),
            "tokens_saved_gating_budget": sum(r.get("meta/tokens_saved_gating", 0) for r in rows),
            "tokens_saved_cutoff_budget": sum(r.get("meta/tokens_saved_cutoff", 0) for r in rows),
            "sft_steps": sum(1 for r in rows if r.get("meta/sft_examples")),
            "sft_examples": sum(r.get("meta/sft_examples", 0) for r in rows)}


def run_summary(run: dict[str, Any], window: int) -> dict[str, Any]:
    points, rows = run["points"], run["rows"]
    caps = run["tally"].caps
    last = points[-1]
    return {"steps": len(points), "startup_s": run["startup_s"], "wall_s": last.wall_s,
            "solution_tokens": last.solution_tokens, "meta_tokens": last.meta_tokens,
            "trained_solution_tokens": last.trained_solution_tokens,
            "meta_token_share": _share(last.meta_tokens, last.meta_tokens + last.solution_tokens),
            "solution_max_tokens_mean": round(sum(c * n for c, n, _ in caps) / sum(n for _, n, _ in caps), 3),
            "reward_first": points[0].reward, "reward_last": last.reward,
            "staleness_mean": round(statistics.fmean(r["staleness_mean"] for r in rows), 3),
            "best_running_mean": best_running_mean(points, window),
            "curve": [[p.step, p.solution_tokens, p.wall_s, round(p.reward, 4)] for p in points]}


def compare(runs: dict[str, dict[str, Any]], window: int, seed: int) -> dict[str, float | None]:
    """Emit the target, the ratios and each run's summary for one seed; returns the ratios by metric."""
    points = {name: run["points"] for name, run in runs.items()}
    target, rule = choose_target(points, window)
    reach = {name: (first_reach(p, target, window) if target is not None else None) for name, p in points.items()}
    common = {"seed": seed, "window": window, "target_reward": target, "paper_reported": PAPER_SPEEDUP,
              **{f"{n}_step": (r.step if r else None) for n, r in reach.items()}}
    emit(BENCH, "target_reward", target, "reward", rule=rule, seed=seed, window=window,
         **{f"{n}_best_running_mean": best_running_mean(p, window) for n, p in points.items()})
    ratios: dict[str, float | None] = {}
    for metric, attr, unit in (("solution_tokens_to_target", "solution_tokens", "tokens"),
                               ("wall_s_to_target", "wall_s", "s")):
        values = {n: (getattr(r, attr) if r else None) for n, r in reach.items()}
        ratio, reason = speedup(values["grpo"], values["masa"], attr)
        ratios[metric + "_speedup"] = ratio
        emit(BENCH, metric + "_speedup", ratio, f"x (grpo / masa {unit})", grpo=values["grpo"],
             masa=values["masa"], reason=reason, **common)
    trained = {f"{n}_trained_solution_tokens": (r.trained_solution_tokens if r else None) for n, r in reach.items()}
    ratio, reason = speedup(trained["grpo_trained_solution_tokens"], trained["masa_trained_solution_tokens"],
                            "trained solution tokens")
    emit(BENCH, "trained_solution_tokens_to_target_speedup", ratio, "x (grpo / masa tokens)", reason=reason,
         **trained, **common)
    emit(BENCH, "run_grpo", runs["grpo"]["points"][-1].solution_tokens, "solution tokens", seed=seed,
         **run_summary(runs["grpo"], window))
    emit(BENCH, "run_masa", runs["masa"]["points"][-1].solution_tokens, "solution tokens", seed=seed,
         **run_summary(runs["masa"], window), **masa_fields(runs["masa"]))
    return ratios


def median_ratio(ratios: Sequence[float | None]) -> tuple[float | None, int]:
    """(median of the seeds' ratios that exist, how many seeds had none)."""
    present = [r for r in ratios if r is not None]
    return (round(statistics.median(present), 4) if present else None), len(ratios) - len(present)


def _extra_args(parser: Any) -> None:
    parser.add_argument("--model", default="tiny", help="model.path (default: the tiny random Llama)")
    parser.add_argument("--steps", type=int, default=None, help="learner steps per run")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="trainer.seed values, one pair each")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override applied to both runs (repeatable), e.g. learner.lr=1e-3")


def main() -> None:
    args = parse_args(__doc__, extra=_extra_args)
    from peirce.actors.runtime import ensure_ray

    ensure_ray()
    steps, seeds, window, switch = (20, [0], 3, 2) if args.quick else (40, [0, 1, 2], 5, 4)
    steps = args.steps or steps
    seeds = args.seeds if args.seeds else seeds
    per_seed = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            runs = {kind: train_once(kind, Path(tmp), args.overrides, model=args.model, steps=steps, seed=seed,
                                     switch_step=switch) for kind in ("grpo", "masa")}
        per_seed.append(compare(runs, window, seed))
    if len(seeds) > 1:
        for metric in per_seed[0]:
            value, missing = median_ratio([r[metric] for r in per_seed])
            emit(BENCH, metric + "_median", value, "x (grpo / masa)", seeds=seeds, seeds_without_ratio=missing,
                 paper_reported=PAPER_SPEEDUP)


if __name__ == "__main__":
    main()
