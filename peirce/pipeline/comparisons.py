"""What the report concludes (pure): does a model beat the base model, with 95% intervals.

Per specialist, on its own maa-<task> suites: the warm-up alone vs base, the RL
specialist vs base, and the RL specialist vs its warm-up (what RL itself added). The
merged model vs base on every MAA suite, and whether it beats base on all of them. A
verdict is "beats" only when the intervals do not overlap (`peirce.eval.intervals.verdict`),
"no interval" for results written before intervals existed. The same comparisons on the
format rate (`FORMAT`: a Wilson interval over samples) show what the warm-up is for even
where pass@1 is 0 everywhere.

Also the learning-signal flag of a training run, read from what the trainer leaves in
its run directory: run_summary.json when present, else the per-step `no_signal` fields
of metrics.jsonl.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peirce.eval.intervals import Interval, verdict, wilson
from peirce.eval.levels import level_scores, suite_levels
from peirce.trainer.run_dir import RunDir


@dataclass(frozen=True)
class Score:
    value: float
    interval: Interval | None
    tasks: int

    def text(self) -> str:
        if self.interval is None:
            return f"{100 * self.value:.1f}"
        return f"{100 * self.value:.1f} [{100 * self.interval.low:.1f}, {100 * self.interval.high:.1f}]"


@dataclass(frozen=True)
class Comparison:
    suite: str
    candidate: str
    reference: str
    cand: Score
    ref: Score
    verdict: str  # beats | worse | not distinguishable | no interval
    level: int | None = None  # the suite's tasks of this level only; None: the whole suite

    def sentence(self) -> str:
        said = {"beats": "beats", "worse": "is worse than", "not distinguishable": "is not distinguishable from",
                "no interval": "has no interval to compare with"}[self.verdict]
        where = self.suite if self.level is None else f"{self.suite} L{self.level}"
        return (f"{self.candidate} {said} {self.reference} on {where}: {self.cand.text()} vs "
                f"{self.ref.text()} ({self.cand.tasks} problems)")


FORMAT = "format"  # pseudo-metric: share of samples in the answer format, Wilson over samples


def score_of(result: Any, suite: str, metric: str, level: int | None = None) -> Score | None:
    """The metric of `suite` (of its `level` tasks only, when given) in an EvalResult, with its
    interval when the result has one. Results keep no per-level format counts: FORMAT by level is None."""
    if level is not None:
        found = level_scores(result, suite, level) if metric != FORMAT else None
        if found is None or metric not in found.metrics:
            return None
        return Score(found.metrics[metric], found.intervals.get(metric), found.tasks)
    res = result.suites.get(suite) if result is not None else None
    if res is not None and metric == FORMAT:
        return Score(res.format_rate, wilson(round(res.format_rate * res.samples), res.samples), res.tasks)
    if res is None or metric not in res.metrics:
        return None
    ci = res.intervals.get(metric)
    interval = Interval(ci[0], ci[1], res.interval_method or "wilson") if ci else None
    return Score(res.metrics[metric], interval, res.tasks)


def compare(results: Mapping[str, Any], candidate: str, reference: str, suite: str, metric: str,
            level: int | None = None) -> Comparison | None:
    cand = score_of(results.get(candidate), suite, metric, level)
    ref = score_of(results.get(reference), suite, metric, level)
    if cand is None or ref is None:
        return None
    said = "no interval" if cand.interval is None or ref.interval is None else verdict(cand.interval, ref.interval)
    return Comparison(suite, candidate, reference, cand, ref, said, level)


def _levels(results: Mapping[str, Any], suite: str, by_level: bool) -> list[int | None]:
    """[None] (the whole suite), or each level the suite holds when `by_level` and it holds several."""
    levels = suite_levels(list(results.values()), suite) if by_level else []
    return levels if len(levels) > 1 else [None]


def own_suites(suites: Sequence[str], families: Sequence[str]) -> list[str]:
    return [s for s in suites if any(s in (f"maa-{f}", f"maa-reference-{f}") for f in families)]


def specialist_comparisons(results: Mapping[str, Any], specialists: Mapping[str, Sequence[str]],
                           suites: Sequence[str], metric: str, base: str = "base", *, by_level: bool = False
                           ) -> list[Comparison]:
    """Per specialist (name -> its task families) and own suite (and level, `by_level`): warm-up vs
    base, RL vs base, RL vs warm-up."""
    out = []
    for name, families in specialists.items():
        warm = f"{name}-warmup"
        for suite in own_suites(suites, families):
            for level in _levels(results, suite, by_level):
                for cand, ref in ((warm, base), (name, base), (name, warm)):
                    if (c := compare(results, cand, ref, suite, metric, level)) is not None:
                        out.append(c)
    return out


def merged_comparisons(results: Mapping[str, Any], suites: Sequence[str], metric: str, merged: str = "merged",
                       base: str = "base", *, by_level: bool = False) -> tuple[list[Comparison], bool]:
    """Merged vs base on every MAA suite (and level, `by_level`), and whether it beats base on all."""
    found = [c for s in suites if s.startswith("maa-") for level in _levels(results, s, by_level)
             if (c := compare(results, merged, base, s, metric, level))]
    return found, bool(found) and all(c.verdict == "beats" for c in found)


DOMAIN_RUNS = {"domain-from-merged": "merged", "domain-from-base": "base"}  # domain run -> where it started


def domain_comparisons(results: Mapping[str, Any], suites: Sequence[str], metric: str) -> list[Comparison]:
    """On every non-MAA suite: domain RL from merged vs from base (the recipe's claim), and each
    domain run vs the model it started from (what domain RL added)."""
    pairs = [("domain-from-merged", "domain-from-base"), *DOMAIN_RUNS.items()]
    return [c for s in suites if not s.startswith("maa-") for cand, ref in pairs
            if (c := compare(results, cand, ref, s, metric))]


@dataclass(frozen=True)
class Signal:
    flagged: bool | None  # None: the run left nothing to read it from
    text: str


def _signal(without: int, total: int, episode: bool, causes: Sequence[str]) -> Signal:
    """Flagged when the guard saw an episode (trainer.no_signal_steps in a row) or no step had signal."""
    why = f" ({', '.join(causes)})" if causes else ""
    if episode or (total > 0 and without >= total):
        return Signal(True, f"NO SIGNAL: {without} of {total} steps without reward variance{why}")
    return Signal(False, f"ok (signal in {total - without} of {total} steps)" if without else "ok")


def run_signal(run_dir: Path) -> Signal:
    """Whether a training run went without learning signal (zero reward variance, so zero advantages)."""
    summary = Path(run_dir) / "run_summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        causes = sorted({e["cause"] for e in s.get("no_signal_episodes", []) if e.get("cause")})
        signal = _signal(int(s.get("no_signal_steps", 0)), int(s.get("step", 0)), bool(s.get("no_signal")), causes)
        if s.get("ended_early"):  # fewer steps than asked: say so beside the signal verdict
            return Signal(True, f"{signal.text}; ENDED EARLY: the task source ran out at step {s.get('step', 0)}")
        return signal
    rows = [r for r in RunDir(Path(run_dir)).read_metrics() if "no_signal_steps" in r]
    if not rows:
        return Signal(None, "unknown")
    causes = sorted({r["no_signal_cause"] for r in rows if r.get("no_signal_cause")})
    return _signal(sum(r["no_signal_steps"] > 0 for r in rows), len(rows), any(r.get("no_signal") for r in rows),
                   causes)
