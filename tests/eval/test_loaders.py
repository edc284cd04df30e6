"""Benchmark-file loaders on small fixture files, judged by the real rewards (sandboxed code)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from peirce.eval.loaders import FORMATS, BenchmarkFileError, load_benchmark_file
from peirce.rewards.registry import get_reward
from eval_helpers import GPQA_ROWS, write_csv, write_jsonl


def judge(task, turn):
    return get_reward(task.family)(task, turn)


def test_math500(math500_file):
    tasks = load_benchmark_file(math500_file, "math500")
    assert [t.id for t in tasks] == ["math500-test-prealgebra-1.json", "math500-test-algebra-2.json"]
    assert all(t.family == "math" and t.split == "test" for t in tasks)
    assert tasks[1].puzzle["answer"] == "\\frac{1}{2}"
    assert judge(tasks[1], "so \\boxed{0.5}").correct is True  # symbolic equivalence, not string match
    assert judge(tasks[0], "\\boxed{8}").correct is False


def test_aime_csv_and_parquet(aime_csv, tmp_path):
    tasks = load_benchmark_file(aime_csv, "aime")
    assert [t.id for t in tasks] == ["aime-1983-1", "aime-1983-2"]
    assert tasks[0].puzzle_text == "Find $x$ if $2x = 10$." and tasks[0].puzzle["answer"] == "5"
    assert judge(tasks[1], "\\boxed{42}").correct is True
    pq.write_table(pa.Table.from_pylist([{"problem": "1+1?", "answer": "2"}]), tmp_path / "aime24.parquet")
    (t,) = load_benchmark_file(tmp_path / "aime24.parquet", "aime")
    assert t.id == "aime-00000" and judge(t, "\\boxed{2}").correct is True


def test_amc_float_answers_become_integers(amc_jsonl):
    tasks = load_benchmark_file(amc_jsonl, "amc")
    assert [t.puzzle["answer"] for t in tasks] == ["27", "0.25"]
    assert judge(tasks[0], "\\boxed{27}").correct is True


def test_gpqa_choices_shuffled_deterministically(gpqa_csv):
    a = load_benchmark_file(gpqa_csv, "gpqa", seed=0)
    b = load_benchmark_file(gpqa_csv, "gpqa", seed=0)
    c = load_benchmark_file(gpqa_csv, "gpqa", seed=1)
    assert a == b
    for t, row in zip(a, GPQA_ROWS):
        assert t.family == "science" and len(t.puzzle["choices"]) == 4
        gold = t.puzzle["answer"]
        assert t.puzzle["choices"][ord(gold) - 65] == row["Correct Answer"]
        assert f"{gold}. {row['Correct Answer']}" in t.puzzle_text
        assert judge(t, f"\\boxed{{{gold}}}").correct is True
        wrong = next(x for x in "ABCD" if x != gold)
        assert judge(t, f"\\boxed{{{wrong}}}").correct is False
    assert len({t.puzzle["answer"] for t in a}) > 1  # not always "A"
    assert [t.puzzle["answer"] for t in a] != [t.puzzle["answer"] for t in c]


def test_mbpp_reference_code_passes(mbpp_jsonl):
    tasks = load_benchmark_file(mbpp_jsonl, "mbpp")
    assert [t.id for t in tasks] == ["mbpp-11", "mbpp-12"]
    assert judge(tasks[0], tasks[0].solution_text).correct is True
    assert judge(tasks[1], "```python\ndef sq(x):\n    return x + x\n```").correct is False


STDIN_PROGRAMS = [
    "a, b = map(int, input().split())\nprint(a + b)",
    "import sys\na, b = map(int, sys.stdin.buffer.read().split())\nsys.stdout.write(str(a + b) + '\\n')",
    "a, b = map(int, open(0).read().split())\nprint(a + b)",
    "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n\nif __name__ == '__main__':\n    main()",
    "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(0)",
]


@pytest.mark.parametrize("program", STDIN_PROGRAMS)
def test_livecodebench_stdin_correct_programs_pass(lcb_jsonl, program):
    task = load_benchmark_file(lcb_jsonl, "livecodebench")[0]
    r = judge(task, f"```python\n{program}\n```")
    assert r.correct is True and r.reward == 1.0


def test_livecodebench_stdin_wrong_programs_fail(lcb_jsonl):
    task = load_benchmark_file(lcb_jsonl, "livecodebench")[0]
    assert "print A+B" in task.puzzle_text and "_peirce" not in task.puzzle_text
    r = judge(task, "```python\nprint(3)\n```")  # right on case 0 only
    assert r.correct is False and r.reward == 0.5
    assert judge(task, "```python\na, b = map(int, input().split())\nprint(a * b)\n```").correct is False


def test_livecodebench_functional(lcb_jsonl):
    task = load_benchmark_file(lcb_jsonl, "livecodebench")[1]
    assert task.id == "livecodebench-2828" and "class Solution" in task.puzzle_text
    good = ("```python\nclass Solution:\n    def total(self, nums: List[int], k: int) -> int:\n"
            "        return sum(nums) + k\n```")
    assert judge(task, good).correct is True
    assert judge(task, good.replace("+ k", "+ 1")).correct is False


@pytest.mark.parametrize(("fmt", "row", "field"), [
    ("math500", {"problem": "x"}, "'answer'"),
    ("gpqa", {"Question": "q", "Correct Answer": "a", "Incorrect Answer 1": "b", "Incorrect Answer 2": "c"},
     "'Incorrect Answer 3'"),
    ("mbpp", {"text": "t", "test_list": []}, "'test_list'"),
    ("livecodebench", {"question_content": "q", "public_test_cases": "not json"}, "public_test_cases"),
    ("livecodebench", {"question_content": "q", "public_test_cases": json.dumps(
        [{"input": "1", "output": "1", "testtype": "functional"}]), "metadata": "{}"}, "func_name"),
    ("livecodebench", {"question_content": "q", "public_test_cases": json.dumps(
        [{"input": "1", "output": "1", "testtype": "stdin"}, {"input": "1", "output": "1", "testtype": "functional"}])},
     "mixes"),
    ("livecodebench", {"question_content": "q", "public_test_cases": json.dumps(
        [{"input": "[1,", "output": "1", "testtype": "functional"}]), "metadata": '{"func_name": "f"}'}, "not JSON"),
])
def test_bad_rows_name_row_and_field(tmp_path, fmt, row, field):
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(BenchmarkFileError) as err:
        load_benchmark_file(path, fmt)
    assert field in str(err.value) and "row 0" in str(err.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(BenchmarkFileError, match="no such file"):
        load_benchmark_file(tmp_path / "missing.jsonl", "math500")
    with pytest.raises(BenchmarkFileError, match="format='nope'"):
        load_benchmark_file(tmp_path / "missing.jsonl", "nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BenchmarkFileError, match="suffix '.txt'"):
        load_benchmark_file(tmp_path / "x.txt", "math500")
    (tmp_path / "bad.jsonl").write_text('{"problem": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(BenchmarkFileError, match="bad.jsonl:2: not JSON"):
        load_benchmark_file(tmp_path / "bad.jsonl", "math500")
    write_csv(tmp_path / "dup.csv", [{"ID": "1", "Question": "q", "Answer": "1"},
                                     {"ID": "1", "Question": "r", "Answer": "2"}])
    with pytest.raises(BenchmarkFileError, match="occurs twice"):
        load_benchmark_file(tmp_path / "dup.csv", "aime")
    assert set(FORMATS) == {"math500", "aime", "amc", "gpqa", "mbpp", "livecodebench"}
