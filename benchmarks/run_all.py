"""Run every `benchmarks/bench_*.py` in turn and stream their JSON lines to stdout.

`python benchmarks/run_all.py [--quick] [--only NAME ...]`; a failing benchmark is
reported as {"bench", "metric": "error", ...} and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names (bench_<name>.py) to run")
    args = parser.parse_args(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    failed = 0
    for script in scripts:
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        print(f"# {script.name}", file=sys.stderr, flush=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
        assert proc.stdout is not None
        for line in proc.stdout:
            # Result lines are JSON objects; anything else (Ray forwards its actors' logs
            # to the driver's stdout) goes to stderr so stdout stays one JSON per line.
            out = sys.stdout if line.lstrip().startswith("{") else sys.stderr
            out.write(line)
            out.flush()
        if proc.wait() != 0:
            failed += 1
            print(json.dumps({"bench": script.stem.removeprefix("bench_"), "metric": "error", "value": proc.returncode,
                              "unit": "exit code"}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
