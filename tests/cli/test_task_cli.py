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
    assert r.returncode == 1 and "unknown task family 'nope'" in r.stderr
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
    assert r.returncode == 1 and "unknown task family 'nope'" in r.stderr and r.stdout == ""
    r = peirce("solve", "-", stdin=json.dumps({"task": "nope", "puzzle_text": "x"}))
    assert r.returncode == 1 and "-:1: field 'task': unknown task family 'nope'" in r.stderr
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


# ---------------------------------------------------------------- hostile input and output


def peirce_bytes(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PEIRCE, *args], input=stdin, capture_output=True, timeout=120)


def test_bad_bytes_cost_one_line_each_and_good_lines_survive(generated, tmp_path):
    name, path = generated
    good = path.read_bytes().splitlines()
    expected = [x["answer"] for x in lines(peirce("solve", str(path)).stdout)]
    rows = [
        good[0],
        b'{"puzzle_text": "caf\xc3\xa9 \xff\xfe"}',  # invalid UTF-8 mid-file
        good[1],
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError in json; also pushes the next line past the binary sniff
        good[2],
        b'{"puzzle_text": "a\x00b"}',  # a NUL byte inside one line
        good[3],
        b'{"puzzle_text": 1e999999}',
        good[4],
    ]
    bad = tmp_path / "mixed.jsonl"
    bad.write_bytes(b"\n".join(rows) + b"\n")
    r = peirce_bytes("solve", "--task", name, str(bad))
    assert r.returncode == 1
    out = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert [o.get("answer") for o in out[0::2]] == expected[:5]  # every good line, in order
    stderr = r.stderr.decode()
    assert f"{bad}:2: invalid UTF-8 at byte 24" in stderr
    assert f"{bad}:4: JSON nested too deeply" in stderr
    assert f"{bad}:6: binary data (a NUL at byte 19)" in stderr
    assert all("error" in o for o in out[1::2]) and "Traceback" not in stderr


def test_a_binary_file_is_one_clear_line(tmp_path):
    png = tmp_path / "picture.jsonl"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 40)
    for cmd in ("solve", "score"):
        r = peirce_bytes(cmd, "--task", FAMILIES[0], str(png))
        assert r.returncode == 1 and r.stdout == b""
        [line] = r.stderr.decode().splitlines()
        assert line == f"peirce {cmd}: error: {png}: binary file (NUL byte at offset 8); expected JSON lines (UTF-8 text)"


def test_an_overlong_line_is_skipped_without_losing_the_next(generated, tmp_path):
    name, path = generated
    good = path.read_bytes().splitlines()[0]
    f = tmp_path / "long.jsonl"
    f.write_bytes(b'{"puzzle_text": "' + b"x" * (17 << 20) + b'"}\n' + good + b"\n")
    r = peirce_bytes("solve", "--task", name, str(f))
    out = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert r.returncode == 1 and "error" in out[0] and "answer" in out[1]
    assert f"{f}:1: line longer than {16 << 20} bytes" in r.stderr.decode()


def test_hostile_strings_are_escaped_and_messages_cut(generated):
    name, _ = generated
    rows = [
        json.dumps({"puzzle_text": "\ud800 lone surrogate " + "y" * 1_000_000}),  # json.dumps writes \ud800
        json.dumps({"puzzle_text": "p", "solution_text": "\udfff", "response": "<think>\ud800</think><answer>\udfff</answer>"}),
    ]
    r = peirce("solve", "--task", name, "-", stdin=rows[0])
    assert r.returncode == 1 and max(len(x) for x in r.stderr.splitlines()) < 600 and "Traceback" not in r.stderr
    s = peirce("score", "--task", name, "-", stdin=rows[1])
    assert "Traceback" not in s.stderr and len(lines(s.stdout)) == 1


def test_a_closed_pipe_exits_quietly(generated, tmp_path):
    name, path = generated
    many = tmp_path / "many.jsonl"
    many.write_bytes(path.read_bytes() * 1500)  # ~600 KB of answers: far past the 64 KB pipe buffer
    proc = subprocess.Popen([PEIRCE, "solve", "--task", name, str(many)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(proc.stdout.readline())["answer"]
    proc.stdout.close()  # what `| head -1` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert stderr == "", stderr


def test_generate_out_errors_are_one_line_and_leave_nothing(tmp_path):
    task = FAMILIES[0]
    (tmp_path / "adir.jsonl").mkdir()
    (tmp_path / "afile").write_text("")
    existing = tmp_path / "kept.jsonl"
    existing.write_text("old\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (tmp_path / "adir.jsonl", "is a directory; give a file name"),
        (tmp_path / "afile" / "x.jsonl", f"{str(tmp_path / 'afile')!r} is not a directory"),
        (Path("/proc/peirce-test/x.parquet"), "cannot write --out '/proc/peirce-test/x.parquet'"),
    ]
    for out, expected in cases:
        r = peirce("generate", "--task", task, "--n", "2", "--out", str(out))
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and expected in r.stderr, r.stderr
    r = peirce("generate", "--task", task, "--level", "42", "--n", "2", "--out", str(existing))  # fails after staging
    assert r.returncode == 1 and existing.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp file or folder left behind
    r = peirce("generate", "--task", task, "--n", "2", "--out", str(existing))
    assert r.returncode == 0 and len(read_tasks(existing)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _domain_row(family: str) -> dict:
    from peirce.tasks.domain import DATA_DIR

    return json.loads((DATA_DIR / f"{family}_test.jsonl").read_text().splitlines()[0])


def test_score_picks_each_tasks_own_reward():
    """`auto`, as in training: code runs the tests in the sandbox (the MAA reward gave -3.0)."""
    code = _domain_row("code")
    right = {**code, "response": "<think>loop</think>\n" + code["solution_text"]}
    wrong = {**code, "response": "<think>guess</think>\n```python\ndef factorial(n):\n    return n\n```"}
    stdin = "\n".join(json.dumps(x) for x in (right, wrong))
    r = peirce("score", "--task", "code", "-", stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert [(x["reward"], x["correct"]) for x in lines(r.stdout)] == [(1.0, True), (0.0, False)]
    assert lines(peirce("score", "-", stdin=stdin).stdout) == lines(r.stdout)  # task from each line
    maa = lines(peirce("score", "--task", "code", "--reward", "maa", "-", stdin=stdin).stdout)
    assert [x["reward"] for x in maa] == [-3.0, -3.0]  # what --task code silently did before
    math = _domain_row("math")
    rows = [{**math, "response": f"<think>x</think>{math['solution_text']}"}, {**math, "response": "\\boxed{-12345}"}]
    r = peirce("score", "--task", "math", "-", stdin="\n".join(json.dumps(x) for x in rows))
    assert [x["correct"] for x in lines(r.stdout)] == [True, False], r.stderr


# ---------------------------------------------------------------- --worked


def test_worked_solutions_agree_across_commands_and_earn_the_full_reward(generated, tmp_path):
    import pyarrow.parquet as pq

    name, _ = generated
    common = ["generate", "--task", name, "--level", "3", "--n", "6", "--split", "test", "--seed", "4", "--worked"]
    jl, pqt = tmp_path / "w.jsonl", tmp_path / "w.parquet"
    assert peirce(*common, "--out", str(jl)).returncode == 0
    assert peirce(*common, "--out", str(pqt)).returncode == 0
    rows = lines(jl.read_text())
    worked = [r["worked_solution"] for r in rows]
    assert worked == pq.read_table(pqt).column("worked_solution").to_pylist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.jsonl", "w.parquet"]

    solved = lines(peirce("solve", "--worked", str(jl)).stdout)
    assert [s["worked_solution"] for s in solved] == worked  # solve phrases each puzzle as generate did
    assert [s["answer"] for s in solved] == [x["answer"] for x in lines(peirce("solve", str(jl)).stdout)]

    fixed = lines(peirce("solve", "--worked", "--variant", "1", "--task", name, str(jl)).stdout)
    for completions in (worked, [s["worked_solution"] for s in fixed]):
        stdin = "\n".join(json.dumps({**r, "response": w}) for r, w in zip(rows, completions))
        r = peirce("score", "--prefill", "<think>", "-", stdin=stdin)
        assert [x["reward"] for x in lines(r.stdout)] == [3.0] * 6, r.stderr


def test_worked_flag_errors(generated, tmp_path):
    name, path = generated
    r = peirce("solve", "--variant", "1", str(path))
    assert r.returncode == 1 and "--variant needs --worked" in r.stderr
    r = peirce("solve", "--worked", "--variant", "99", "--task", name, str(path))
    assert r.returncode == 1 and f"--variant must be within 0..2 for {name}, got 99" in r.stderr and r.stdout == ""
    r = peirce("solve", "--worked", "--task", "math", str(path))
    assert r.returncode == 1 and "--worked: task 'math' has no worked solutions" in r.stderr
    r = peirce("generate", "--task", "math", "--n", "2", "--worked", "--out", str(tmp_path / "m.jsonl"))
    assert r.returncode == 1 and "no worked solutions" in r.stderr and not list(tmp_path.iterdir())
