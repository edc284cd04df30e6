"""benchmarks/common.py: every JSON line carries the host it was measured on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import common  # noqa: E402


def test_emit_records_host_flags_and_ratio(capsys):
    record = common.emit("b", "m", 3.0, "s", baseline=4.0, note="x")
    line = json.loads(capsys.readouterr().out)
    assert line == record
    assert (line["ratio"], line["note"]) == (0.75, "x")
    with open("/proc/cpuinfo") as fh:
        flags = set(fh.read().split())
    assert set(line["host"]["flags"]) == flags & {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
                                                   "amx_bf16", "amx_tile"}
    assert line["host"]["cpus"] >= 1


def test_emit_zero_baseline_has_no_ratio(capsys):
    assert common.emit("b", "m", 1.0, "s", baseline=0.0)["ratio"] is None
