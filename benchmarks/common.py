"""Shared helpers for `benchmarks/bench_*.py`: one JSON object per line on stdout.

Each line: {"bench", "metric", "value", "unit", "host"}, plus "baseline" and "ratio"
(value / baseline) when the number is compared with a target or a baseline run. "host"
names the CPU, its usable cores and the ISA flags vLLM's and torch's CPU kernels choose
between (bf16 is ~80x slower where AVX512-BF16/AMX are missing), so a figure is never read
without the machine it came from.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from typing import Any, Callable


@functools.lru_cache(maxsize=1)
def host_info() -> dict[str, Any]:
    """{"cpu", "cpus" (usable), "flags" (the ISA flags present)} of this machine, read once."""
    from peirce.cli.doctor import cpu_report

    cpu = cpu_report()
    return {"cpu": cpu["model"], "cpus": cpu["usable"], "flags": [f for f, present in cpu["isa"].items() if present]}


def emit(bench: str, metric: str, value: float, unit: str, baseline: float | None = None, **extra: Any) -> dict:
    """Print one result line (flushed, so `run_all.py` can stream it) and return it."""
    record: dict[str, Any] = {"bench": bench, "metric": metric, "value": value, "unit": unit}
    if baseline is not None:
        record["baseline"] = baseline
        record["ratio"] = round(value / baseline, 4) if baseline else None
    record.update(extra)
    record.setdefault("host", host_info())
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
