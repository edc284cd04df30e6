"""EvalResult builders for the pipeline tests (imported as a plain module, like eval_helpers)."""

from __future__ import annotations


def make_result(model: str, metrics: dict[str, dict[str, float]], counts: dict[str, list[int]] | None = None,
                format_rate: float = 1.0, levels: dict[str, list[int]] | None = None):
    """An EvalResult as `evaluate` saves it; `counts` (suite -> per-task correct, n=1) adds intervals,
    `levels` (suite -> each task's level) the per-level counts."""
    from peirce.eval.intervals import metric_intervals
    from peirce.eval.runner import EvalResult, EvalSettings, SuiteResult

    suites = {}
    for name, m in metrics.items():
        c = (counts or {}).get(name)
        ci = metric_intervals(c, 1, [1]) if c else {}
        suites[name] = SuiteResult(suite=name, tasks=len(c) if c else 10, samples=len(c) if c else 10, metrics=m,
                                   mean_reward=0.0, format_rate=format_rate, truncated_rate=0.0, reward_errors=0,
                                   correct_per_task=list(c or []), intervals={k: v.to_json() for k, v in ci.items()},
                                   interval_method="wilson" if c else None,
                                   level_per_task=list((levels or {}).get(name, [])))
    return EvalResult(model=model, settings=EvalSettings(), suites=suites, samples_path=None, seconds=1.0)
