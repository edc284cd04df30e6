"""`peirce train|run CONFIG --check`: validate config + overrides, run nothing (no Ray, no torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PEIRCE = str(REPO / ".venv" / "bin" / "peirce")
pytestmark = pytest.mark.skipif(not os.path.exists(PEIRCE), reason="peirce entry point not installed")


def peirce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PEIRCE, *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_train_check_prints_ok_and_starts_nothing():
    code = (
        "import sys, json\n"
        "from peirce.cli.main import main\n"
        "rc = main(['train', 'configs/train-deduction.yaml', 'rollout.workers=2', '--check'])\n"
        "print(json.dumps([rc, [m for m in ('ray', 'torch', 'vllm') if m in sys.modules]]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    ok, result = r.stdout.splitlines()
    assert ok == "config OK: deduction"
    assert json.loads(result) == [0, []]


def test_train_check_reports_bad_overrides_with_field_rule_and_value():
    r = peirce("train", "configs/train-deduction.yaml", "algorithm.clip_low=1.5", "async.max_staleness=true", "--check")
    assert r.returncode == 2 and r.stdout == ""
    assert "algorithm.clip_low: Input should be less than 1 (got 1.5)" in r.stderr
    assert "async.max_staleness: Input should be a valid integer (got True)" in r.stderr
    assert "Traceback" not in r.stderr


def test_train_check_refuses_a_missing_model_folder(tmp_path):
    r = peirce("train", "configs/train-deduction.yaml", f"model.path={tmp_path / 'gone'}", "--check")
    assert r.returncode == 2 and "model.path: must be 'embedded' or 'tiny' or an existing Hugging Face folder" in r.stderr


def test_run_check_resolves_every_stage():
    r = peirce("run", "configs/default.yaml", "--check")
    assert r.returncode == 0 and r.stdout == "config OK: maa\n", r.stderr
    r = peirce("run", "configs/smoke.yaml", "--from", "base", "--check")
    assert r.returncode == 0 and r.stdout == "config OK: smoke\n", r.stderr


def test_run_check_names_the_stage_and_field_of_a_bad_stage_override():
    r = peirce("run", "configs/default.yaml", "stage_a.specialists.induction.algorithm.advantage=ppo", "--check")
    assert r.returncode == 2 and r.stdout == ""
    assert "stage_a.specialists.induction" in r.stderr
    assert "algorithm.advantage: unknown advantage estimator 'ppo'" in r.stderr
    r = peirce("run", "configs/default.yaml", "stage_c.train.rollout.max_tokens=4096", "--check")
    assert r.returncode == 2 and "stage_c.train (domain-from-merged)" in r.stderr
    assert "rollout.max_tokens: must be < model.max_model_len (1024)" in r.stderr


def test_check_refuses_an_alias_bomb(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * 9) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb.write_text("\n".join(lines) + "\n")
    for cmd in ("train", "run"):
        r = peirce(cmd, str(bomb), "--check")
        assert r.returncode == 2 and "YAML expands to more than" in r.stderr, r.stderr
