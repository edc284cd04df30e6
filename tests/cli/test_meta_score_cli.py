"""`peirce meta-score` through the real installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

PEIRCE = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "peirce")
pytestmark = pytest.mark.skipif(not os.path.exists(PEIRCE), reason="peirce entry point not installed")

PROBLEM = "Find the remainder when 2^100 is divided by 7."
SOLUTIONS = [
    {"response": "Using modular arithmetic and Fermat's little theorem: 2.", "correct": True, "length": 100},
    {"response": "By modular arithmetic, powers of 2 cycle: 2.", "correct": True, "length": 150},
    {"response": "Brute force guess: 4.", "correct": False, "length": 300},
    {"response": "modular arithmetic gives 1.", "correct": False, "length": 50},
]
META = ('<meta>needs modular arithmetic</meta>\n{"notions": ["modular arithmetic", "Fermat\'s little theorems", '
        '"remainders", "power cycles"], "pass_rate": 4, "solution_length": 120}')


def peirce(*args: str, stdin: str | bytes) -> subprocess.CompletedProcess:
    text = isinstance(stdin, str)
    return subprocess.run([PEIRCE, *args], input=stdin, capture_output=True, text=text, timeout=120)


def line(**kw) -> str:
    return json.dumps({"problem": PROBLEM, "meta_response": META, "solutions": SOLUTIONS, "k": 8} | kw)


def test_scores_a_line_by_hand():
    r = peirce("meta-score", "-", stdin=line() + "\n")
    assert r.returncode == 0, r.stderr
    [out] = [json.loads(x) for x in r.stdout.splitlines()]
    # length 100 < 120 < 150: 1; pass rate 2/4 vs 4/8: 1; notions: 2 of 3 count (remainder is in the problem)
    assert (out["length"], out["pass_rate"]) == (1.0, 1.0)
    assert out["notions"] == pytest.approx(2 / 3) and out["reward"] == pytest.approx(8 / 9)
    assert out["parsed"] == {"found": True, "notions": ["modular arithmetic", "Fermat's little theorems", "remainders",
                                                         "power cycles"], "pass_rate": 4, "solution_length": 120}


def test_k_from_the_line_or_the_flag_and_base():
    r = peirce("meta-score", "--k", "4", "--base", "0.5", "-",
               stdin="\n".join([line(k=16), json.dumps({"problem": PROBLEM, "meta_response": META, "solutions": SOLUTIONS})]))
    a, b = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 0, r.stderr
    assert a["pass_rate"] == pytest.approx(0.5 ** abs(0.5 - 4 / 16))
    assert b["pass_rate"] == pytest.approx(0.5 ** abs(0.5 - 4 / 4))  # k from --k
    r = peirce("meta-score", "--k", "2", "-", stdin=json.dumps({"problem": PROBLEM, "meta_response": META,
                                                                "solutions": SOLUTIONS}))
    assert json.loads(r.stdout)["parsed"]["pass_rate"] is None  # 4 > k = 2: out of range, scores 0


def test_bad_lines_are_reported_and_the_rest_still_scored():
    rows = [
        line(),
        "{not json",
        json.dumps({"meta_response": META, "solutions": []}),
        line(solutions="many"),
        line(solutions=[SOLUTIONS[0], {"response": "x", "correct": 1, "length": 5}]),
        line(solutions=[{"response": "x", "correct": True, "length": True}]),
        line(solutions=[{"response": "x", "correct": True, "length": -3}]),
        line(solutions=[{"response": 7, "correct": True, "length": 3}]),
        line(solutions=[[1]]),
        line(k=0),
        line(k=True),
        line(meta_response=5),
        "[1, 2]",
        line(meta_response="{" * (1 << 20)),  # hostile but well-formed input: a result, reward 0
        line(),
    ]
    r = peirce("meta-score", "-", stdin="\n".join(rows) + "\n")
    assert r.returncode == 1
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(out) == len(rows)
    assert out[0] == out[-1] and out[0]["reward"] == pytest.approx(8 / 9)
    assert out[13] == {"reward": 0.0, "length": 0.0, "pass_rate": 0.0, "notions": 0.0,
                       "parsed": {"found": False, "notions": None, "pass_rate": None, "solution_length": None}}
    assert all("error" in o for o in out[1:13])
    for expected in [
        "-:2: malformed JSON",
        "-:3: missing field 'problem'",
        "-:4: field 'solutions' must be a list of at most 4096 objects, got str",
        "-:5: solutions[1].correct must be true or false, got int",
        "-:6: solutions[0].length must be an integer >= 0 (tokens), got True",
        "-:7: solutions[0].length must be an integer >= 0 (tokens), got -3",
        "-:8: solutions[0].response must be a string, got int",
        "-:9: solutions[0] must be an object, got list",
        "-:10: field 'k' must be an integer within 1..1000, got 0",
        "-:11: field 'k' must be an integer within 1..1000, got True",
        "-:12: field 'meta_response' must be a string, got int",
        "-:13: expected a JSON object, got list",
    ]:
        assert expected in r.stderr, expected
    assert "Traceback" not in r.stderr


def test_bad_flags_and_help():
    r = peirce("meta-score", "--base", "1.5", "-", stdin="")
    assert r.returncode == 1 and "--base must be within (0, 1), got 1.5" in r.stderr
    r = peirce("meta-score", "--k", "0", "-", stdin="")
    assert r.returncode == 1 and "--k must be an integer within 1..1000, got 0" in r.stderr
    r = peirce("meta-score", "--help", stdin="")
    assert r.returncode == 0 and "usage: peirce meta-score" in r.stdout
    assert "meta-score" in peirce("--help", stdin="").stdout
    r = peirce("meta-score", "/nonexistent/x.jsonl", stdin="")
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_a_file_and_invalid_bytes(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_bytes(line().encode() + b"\n" + b'{"problem": "\xff"}' + b"\n" + line().encode() + b"\n")
    r = peirce("meta-score", str(f), stdin=b"")
    out = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert r.returncode == 1 and "reward" in out[0] and "error" in out[1] and "reward" in out[2]
    assert f"{f}:2: invalid UTF-8" in r.stderr.decode()
