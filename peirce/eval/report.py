"""Side-by-side tables of eval results, laid out like Table 1 of the MAA paper.

Rows are checkpoints in the order given (the paper's: base, each specialist, merged,
domain-RL from merged, domain-RL from base); columns are the suites in order of first
appearance, then "average". A suite a checkpoint was not evaluated on (or a metric it
lacks, e.g. pass@8 of a greedy run) is a missing cell, shown as "-". The average is over
the cells present; when some are missing it gets a (Markdown-escaped) "*" and carries
`average_over` in JSON, so a partial average is never mistaken for a full one. Where a
result carries a 95% interval for the metric (`SuiteResult.intervals`), the cell shows
it beside the score, and a footnote names the method (Wilson, or a bootstrap over problems).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from peirce.eval.runner import EvalResult

MISSING = "-"


@dataclass(frozen=True)
class TableRow:
    name: str
    cells: dict[str, float | None]  # suite -> metric value (fraction in [0, 1]) or None
    average: float | None
    average_over: int
    intervals: dict[str, list[float] | None] = field(default_factory=dict)  # suite -> [low, high] or None
    methods: dict[str, str | None] = field(default_factory=dict)  # suite -> interval method


@dataclass(frozen=True)
class Table:
    metric: str
    columns: list[str]
    rows: list[TableRow]

    def to_json(self) -> dict:
        return {"metric": self.metric, "columns": self.columns,
                "rows": [{"name": r.name, "cells": r.cells, "average": r.average, "average_over": r.average_over,
                          "intervals": {c: r.intervals.get(c) for c in self.columns},
                          "interval_methods": {c: r.methods.get(c) for c in self.columns}}
                         for r in self.rows]}

    def to_markdown(self, digits: int = 1) -> str:
        """Percentages; the best value of each column in bold."""
        best = {c: max((r.cells[c] for r in self.rows if r.cells[c] is not None), default=None) for c in self.columns}
        best_avg = max((r.average for r in self.rows if r.average is not None), default=None)

        def fmt(v: float | None, top: float | None, ci: list[float] | None = None) -> str:
            if v is None:
                return MISSING
            s = f"{100 * v:.{digits}f}"
            s = f"**{s}**" if top is not None and len(self.rows) > 1 and v == top else s
            return s if ci is None else f"{s} [{100 * ci[0]:.{digits}f}, {100 * ci[1]:.{digits}f}]"

        header = ["model", *self.columns, "average"]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        partial = False
        for r in self.rows:
            avg = fmt(r.average, best_avg)
            if r.average is not None and r.average_over < len(self.columns):
                avg, partial = avg + "\\*", True
            cells = (fmt(r.cells[c], best[c], r.intervals.get(c)) for c in self.columns)
            lines.append("| " + " | ".join([r.name, *cells, avg]) + " |")
        lines.append("")
        methods = {m for r in self.rows for m in r.methods.values() if m}
        lines.append(f"{self.metric} in %." + (f" [low, high]: 95% interval ({describe_methods(methods)})."
                                               if methods else ""))
        if partial:
            lines.append("\\* average over the suites present in that row only.")
        return "\n".join(lines) + "\n"


def build_table(results: Sequence[tuple[str, EvalResult]], metric: str = "pass@1") -> Table:
    """One row per (name, result); `metric` is a key of SuiteResult.metrics ("pass@1", "avg@32", ...)."""
    names = [name for name, _ in results]
    if not results:
        raise ValueError("results=[]: need at least one (name, result) pair")
    if len(set(names)) != len(names):
        raise ValueError(f"row names {names!r}: must be distinct")
    columns: list[str] = []
    for _, res in results:
        columns += [s for s in res.suites if s not in columns]
    rows = []
    for name, res in results:
        cells = {c: (res.suites[c].metrics.get(metric) if c in res.suites else None) for c in columns}
        present = [v for v in cells.values() if v is not None]
        intervals = {c: res.suites[c].intervals.get(metric) for c in columns if c in res.suites}
        methods = {c: res.suites[c].interval_method for c in columns if intervals.get(c) is not None}
        rows.append(TableRow(name=name, cells=cells, average=sum(present) / len(present) if present else None,
                             average_over=len(present), intervals=intervals, methods=methods))
    return Table(metric=metric, columns=columns, rows=rows)


def build_level_table(results: Sequence[tuple[str, EvalResult]], metric: str = "pass@1") -> Table | None:
    """The same table with one column per (suite, level), for suites holding more than one level;
    None when no suite does (or the results predate per-level counts)."""
    from peirce.eval.levels import level_scores, suite_levels

    evals = [res for _, res in results]
    suites: list[str] = []
    for res in evals:
        suites += [s for s in res.suites if s not in suites]
    columns = [(s, lv) for s in suites if len(levels := suite_levels(evals, s)) > 1 for lv in levels]
    if not columns:
        return None
    names = {col: f"{col[0]} L{col[1]}" for col in columns}
    rows = []
    for name, res in results:
        found = {names[c]: level_scores(res, *c) for c in columns}
        cells = {c: (f.metrics.get(metric) if f else None) for c, f in found.items()}
        intervals = {c: f.intervals[metric].to_json() for c, f in found.items() if f and metric in f.intervals}
        methods = {c: f.intervals[metric].method for c, f in found.items() if f and metric in f.intervals}
        present = [v for v in cells.values() if v is not None]
        if present:  # a checkpoint evaluated on none of these suites (a domain run) gets no empty row
            rows.append(TableRow(name=name, cells=cells, average=sum(present) / len(present),
                                 average_over=len(present), intervals=intervals, methods=methods))
    return Table(metric=metric, columns=list(names.values()), rows=rows)


METHOD_TEXT = {"wilson": "Wilson score interval over problems",
               "bootstrap": "percentile bootstrap over problems, 2,000 resamples"}


def describe_methods(methods: set[str]) -> str:
    return "; ".join(METHOD_TEXT.get(m, m) for m in sorted(methods))
