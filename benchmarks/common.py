"""Shared helpers for `benchmarks/bench_*.py`: one JSON object per line on stdout.

Each line: {"bench", "metric", "value", "unit"}, plus "baseline" and "ratio"
(value / baseline) when the number is compared with a target or a baseline run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any, Callable


def emit(bench: str, metric: str, value: float, unit: str, baseline: float | None = None, **extra: Any) -> dict:
    """Print one result line (flushed, so `run_all.py` can stream it) and return it."""
    record: dict[str, Any] = {"bench": bench, "metric": metric, "value": value, "unit": unit}
    if baseline is not None:
        record["baseline"] = baseline
        record["ratio"] = round(value / baseline, 4) if baseline else None
    record.update(extra)
    print(json.dumps(record), flush=True)
    return record


def median_time(fn: Callable[[], Any], repeats: int = 5, *, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of `repeats` calls of `fn` (pass `clock=time.process_time` for CPU time)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def parse_args(description: str | None = None, argv: list[str] | None = None, extra: Callable | None = None):
    """`--quick` (small sizes, for CI and `run_all.py --quick`); `extra(parser)` adds more."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    if extra is not None:
        extra(parser)
    return parser.parse_args(sys.argv[1:] if argv is None else argv)
