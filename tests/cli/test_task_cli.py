"""`peirce generate|solve|score` through the real installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from peirce.tasks.base import family_names
from peirce.tasks.dataset import read_tasks
from peirce.tasks.prompts import TASK_INSTRUCTIONS

PEIRCE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "peirce")
FAMILIES = [f for f in family_names() if f in TASK_INSTRUCTIONS]  # the MAA logic families
pytestmark = [
    pytest.mark.skipif(not os.path.exists(PEIRCE), reason="peirce entry point not installed"),
    pytest.mark.skipif(not FAMILIES, reason="no task family is registered yet"),
]


def peirce(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PEIRCE, *args], input=stdin, capture_output=True, text=True, timeout=120)


def lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


@pytest.fixture(scope="module", params=FAMILIES)
def generated(request, tmp_path_factory):
    name = request.param
    path = tmp_path_factory.mktemp(name) / "set.jsonl"
    r = peirce("generate", "--task", name, "--level", "3", "--n", "6", "--split", "test", "--seed", "4", "--out", str(path))
    assert r.returncode == 0, r.stderr
    return name, path


def test_generate_writes_both_formats_identically(generated, tmp_path):
    name, path = generated
    pq_path = tmp_path / "set.parquet"
    r = peirce("generate", "--task", name, "--level", "3", "--n", "6", "--split", "test", "--seed", "4", "--out", str(pq_path))
    assert r.returncode == 0, r.stderr
    a, b = read_tasks(path), read_tasks(pq_path)
    assert a == b and len(a) == 6 and {t.split for t in a} == {"test"}


def test_generate_rejects_bad_suffix_and_unknown_task(tmp_path):
    r = peirce("generate", "--task", FAMILIES[0], "--n", "2", "--out", str(tmp_path / "x.csv"))
    assert r.returncode == 1 and "must end in .parquet or .jsonl" in r.stderr and "'.csv'" in r.stderr
    assert not (tmp_path / "x.csv").exists()
    r = peirce("generate", "--task", "nope", "--n", "2", "--out", str(tmp_path / "x.jsonl"))
    assert r.returncode == 1 and "unknown task 'nope'" in r.stderr
    r = peirce("generate", "--task", FAMILIES[0], "--level", "42", "--n", "2", "--out", str(tmp_path / "x.jsonl"))
    assert r.returncode == 1 and "level=42" in r.stderr


def test_solve_answers_match_gold(generated):
    name, path = generated
    r = peirce("solve", "--task", name, str(path))
    assert r.returncode == 0, r.stderr
    answers = [x["answer"] for x in lines(r.stdout)]
    golds = [t.solution_text for t in read_tasks(path)]
    assert len(answers) == len(golds)
    # Scored by the reward, not by string equality (formatting may differ in whitespace).
    scored = "\n".join(
        json.dumps({"puzzle_text": "", "solution_text": g, "response": f"<think></think><answer>{a}</answer>"})
        for a, g in zip(answers, golds)
    )
    s = peirce("score", "--task", name, "-", stdin=scored)
    assert [x["reward"] for x in lines(s.stdout)] == [3.0] * len(golds), s.stderr


def test_solve_bad_lines_are_reported_and_skipped(generated):
    name, path = generated
    good = path.read_text().splitlines()[0]
    text = "\n".join([good, "{not json", json.dumps({"task": name}), json.dumps([1]), good, json.dumps({"puzzle_text": 5})])
    r = peirce("solve", "--task", name, "-", stdin=text)
    assert r.returncode == 1
    out = lines(r.stdout)
    assert len(out) == 6 and "answer" in out[0] and "answer" in out[4]
    assert "-:2: malformed JSON" in r.stderr
    assert "-:3: missing field 'puzzle_text'" in r.stderr
    assert "-:4: expected a JSON object" in r.stderr
    assert "-:6: field 'puzzle_text' must be a string, got int" in r.stderr
    unsolvable = peirce("solve", "--task", name, "-", stdin=json.dumps({"puzzle_text": "gibberish"}))
    assert unsolvable.returncode == 1 and "-:1: field 'puzzle_text': cannot solve" in unsolvable.stderr


def test_solve_task_from_lines_and_unknown_task(generated):
    name, path = generated
    r = peirce("solve", str(path))  # generated lines carry 'task'
    assert r.returncode == 0 and len(lines(r.stdout)) == 6
    r = peirce("solve", "--task", "nope", str(path))
    assert r.returncode == 1 and "unknown task 'nope'" in r.stderr and r.stdout == ""
    r = peirce("solve", "-", stdin=json.dumps({"task": "nope", "puzzle_text": "x"}))
    assert r.returncode == 1 and "-:1: field 'task': unknown task 'nope'" in r.stderr
    r = peirce("solve", str(path.parent / "missing.jsonl"))
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_score_the_four_totals_and_errors(generated):
    name, path = generated
    t = read_tasks(path)[0]
    base = {"task": name, "puzzle_text": t.puzzle_text, "solution_text": t.solution_text}
    responses = [
        f"<think>ok</think>\n<answer>\n{t.solution_text}</answer>",
        "<think>ok</think><answer>not an answer</answer>",
        t.solution_text,
    ]
    rows = [json.dumps({**base, "response": resp}) for resp in responses]
    rows += [json.dumps({k: v for k, v in base.items() if k != "solution_text"} | {"response": "x"}), "[]"]
    r = peirce("score", "-", stdin="\n".join(rows) + "\n")
    assert r.returncode == 1
    out = lines(r.stdout)
    assert out[:3] == [
        {"reward": 3.0, "format_ok": True, "correct": True},
        {"reward": -1.0, "format_ok": True, "correct": None},
        {"reward": -3.0, "format_ok": False, "correct": None},
    ]
    assert "error" in out[3] and "-:4: missing field 'solution_text'" in r.stderr
    assert "-:5: expected a JSON object" in r.stderr
    # --prefill rebuilds the assistant turn from a bare completion.
    bare = json.dumps({**base, "response": f"ok</think><answer>{t.solution_text}</answer>"})
    assert lines(peirce("score", "-", stdin=bare).stdout)[0]["reward"] == -3.0
    assert lines(peirce("score", "--prefill", "<think>", "-", stdin=bare).stdout)[0]["reward"] == 3.0
    r = peirce("score", "--reward", "nope", "-", stdin=bare)
    assert r.returncode == 1 and "unknown reward 'nope'" in r.stderr and "maa" in r.stderr


def test_help_texts():
    for cmd in ("generate", "solve", "score"):
        r = peirce(cmd, "--help")
        assert r.returncode == 0 and "usage: peirce " + cmd in r.stdout
