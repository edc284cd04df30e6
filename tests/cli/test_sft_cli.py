"""`peirce sft CONFIG [key=value ...]`: check-only validation, clear errors, and (slow) a real
run on the tiny model: metrics per step, an HF checkpoint transformers loads, DONE, rerun skip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def peirce(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "peirce.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_help_lists_sft():
    r = peirce("--help")
    assert r.returncode == 0 and "sft" in r.stdout
    r = peirce("sft", "--help")
    assert r.returncode == 0 and "worked solution" in r.stdout


def test_check_prints_ok_and_imports_no_torch():
    code = ("import sys, json\nfrom peirce.cli.main import main\n"
            "rc = main(['sft', 'configs/sft.yaml', 'examples=64', 'families=[induction]', '--check'])\n"
            "print(json.dumps([rc, [m for m in ('ray', 'torch', 'deepspeed') if m in sys.modules]]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    ok, result = r.stdout.splitlines()
    assert ok == "config OK: sft-deduction" and json.loads(result) == [0, []]


def test_bad_overrides_name_field_rule_and_value():
    r = peirce("sft", "configs/sft.yaml", "families=[math]", "lr=-1", "--check")
    assert r.returncode == 2 and r.stdout == ""
    assert "families: every family must have worked solutions (deduction, induction, abduction); these have " \
           "none: ['math']" in r.stderr
    assert "lr: Input should be greater than 0 (got -1)" in r.stderr
    r = peirce("sft", "configs/missing.yaml", "--check")
    assert r.returncode == 2 and "config file not found" in r.stderr


@pytest.mark.slow
def test_sft_on_the_tiny_model_writes_a_loadable_checkpoint_and_reruns_skip(tmp_path):
    run = tmp_path / "sft"
    args = ("sft", "configs/sft.yaml", "model=tiny", "families=[induction]", "examples=8", "batch_size=4",
            "lr=1e-3", f"run_dir={run}", "--no-progress")
    r = peirce(*args, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2] and all(row["sft_loss"] > 0 for row in rows)
    done = json.loads((run / "DONE").read_text())
    assert done["steps"] == 2 and done["examples"] == 8 and Path(done["model_dir"]).is_dir()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(done["model_dir"])
    assert AutoTokenizer.from_pretrained(done["model_dir"]).eos_token == "<|im_end|>"
    again = peirce(*args, timeout=120)
    assert again.returncode == 0 and "already complete; skipping" in again.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
