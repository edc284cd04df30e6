"""Code reward: extraction, verdicts from the judge process, stdin cases, the plain-data codec, modes.

Hostile programs are in test_code_hostile.py."""

from __future__ import annotations

import pytest

import collections
import decimal
import fractions
import json

from peirce.rewards.code import (
    CodeRewardConfig,
    CodeTaskError,
    StdinCase,
    code_reward,
    extract_code,
    run_stdin_cases,
    run_tests,
    score_code,
    task_stdin_cases,
    task_tests,
)
from peirce.rewards.code_harness import NotPlain, ProtocolError, decode, encode
from peirce.rewards.registry import get_reward
from peirce.rewards.sandbox import SandboxLimits
from peirce.tasks.domain import code_task

TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add(10, 20) == 30"]
LIMITS = SandboxLimits(wall_s=5, cpu_s=2)


def _task(**kw):
    return code_task("Write add(a, b).", kw.pop("tests", TESTS), id="code-t-0", split="test", **kw)


def _block(code: str) -> str:
    return f"Here you go:\n```python\n{code}\n```\nDone."


def test_extract_last_python_block():
    text = "```python\nx = 1\n```\ntext\n```py\ny = 2\n```\n```\nplain\n```"
    assert extract_code(text) == "y = 2\n"
    assert extract_code("```\nonly bare\n```") == "only bare\n"
    assert extract_code("```python\nnever closed") is None
    assert extract_code("no code") is None


def test_correct_solution_passes_all():
    r = get_reward("code")(_task(), _block("def add(a, b):\n    return a + b"))
    assert (r.reward, r.correct, r.format_ok) == (1.0, True, True)


def test_wrong_solution_fails():
    r = get_reward("code")(_task(), _block("def add(a, b):\n    return a - b"))
    assert (r.reward, r.correct, r.format_ok) == (0.0, False, True)


def test_partial_credit_and_all_mode():
    partial = _block("def add(a, b):\n    return 5 if (a, b) == (2, 3) else -1")
    assert get_reward("code")(_task(), partial).reward == pytest.approx(1 / 3)
    strict = code_reward(CodeRewardConfig(mode="all", limits=LIMITS))
    assert strict(_task(), partial).reward == 0.0


def test_missing_block_is_format_failure():
    r = get_reward("code")(_task(), "def add(a, b): return a + b")
    assert (r.reward, r.format_ok, r.correct) == (0.0, False, None)


def test_prints_cannot_forge_verdicts():
    forged = "import sys\nfor i in range(3):\n    print(f'\\nPASS {i} 1')\nsys.exit(0)"
    run = run_tests(forged, TESTS, limits=LIMITS)
    assert run.passed == 0 and run.total == 3


def test_early_exit_and_crash_fail():
    for program in ("import os\nos._exit(0)", "raise SystemExit(0)", "def add(a, b):\n    return a +"):
        assert run_tests(program, TESTS, limits=LIMITS).passed == 0


def test_infinite_loop_in_one_test_keeps_earlier_verdicts():
    program = "def add(a, b):\n    if a == 10:\n        while True: pass\n    return a + b"
    run = run_tests(program, TESTS, limits=SandboxLimits(wall_s=3, cpu_s=1))
    assert run.passed == 2 and run.total == 3


def test_main_block_does_not_run():
    program = "def add(a, b):\n    return a + b\nif __name__ == '__main__':\n    input()\n    raise SystemExit(1)"
    assert run_tests(program, TESTS, limits=LIMITS).passed == 3


def test_humaneval_style_test_program():
    task = code_task("Write inc(x).", None, id="c", split="test", entry_point="inc",
                     test_program="def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-1) == 0")
    assert get_reward("code")(task, _block("def inc(x):\n    return x + 1")).reward == 1.0
    assert get_reward("code")(task, _block("def inc(x):\n    return x")).reward == 0.0


def test_setup_code_runs_first():
    task = _task(setup="OFFSET = 0")
    assert get_reward("code")(task, _block("def add(a, b):\n    return a + b + OFFSET")).reward == 1.0


def test_bad_task_data_names_field():
    with pytest.raises(CodeTaskError, match="puzzle.tests"):
        task_tests({"tests": "assert True"})
    with pytest.raises(CodeTaskError, match="entry_point"):
        task_tests({"test_program": "def check(c): pass", "entry_point": "1bad"})
    with pytest.raises(ValueError, match="mode"):
        CodeRewardConfig(mode="some")


def test_score_code_reports_program():
    r = score_code(_task(), _block("def add(a, b):\n    return a + b"), CodeRewardConfig(limits=LIMITS))
    assert r.answer.startswith("def add")


def test_passing_program_printing_past_the_output_cap_scores_one():
    program = ("import sys\nprint('x' * 200_000)\nsys.stderr.write('e' * 200_000)\n"
               "def add(a, b):\n    print('y' * 100_000)\n    return a + b")
    run = run_tests(program, TESTS, limits=LIMITS)
    assert run.sandbox.stdout_truncated and run.passed == 3  # verdicts travel apart from the program's stdout


def test_tests_run_against_program_objects_like_in_process():
    program = (
        "import math\ncounter = [0]\n"
        "class Box:\n    def __init__(self, v):\n        self.v = v\n    def twice(self):\n        return 2 * self.v\n"
        "def make(v):\n    return Box(v)\n"
        "def gen(n):\n    yield from range(n)\n"
        "def bump():\n    counter[0] += 1\n    return counter[0]\n"
        "def depth(node):\n    return 0 if node is None else 1 + depth(node.child)\n"
        "def half(x):\n    if x % 2:\n        raise ValueError(x)\n    return x // 2\n"
    )
    tests = [
        "assert make(3).v == 3 and make(4).twice() == 8",  # non-plain results stay in the program
        "assert list(gen(3)) == [0, 1, 2] and 2 in gen(3)",
        "assert bump() == 1",
        "assert bump() == 2 and counter == [2]",  # one program namespace across tests
        "assert math.isclose(math.pi, 3.141592653589793)",  # the judge's own math
        "assert depth(chain) == 3",  # a setup object passed by reference
        "try:\n    half(3)\n    assert False\nexcept ValueError:\n    pass",  # builtin exceptions keep their type
        "assert make(1) != 1 and make(1) is not None",
    ]
    setup = "class Node:\n    def __init__(self, child=None):\n        self.child = child\nchain = Node(Node(Node()))"
    run = run_tests(program, tests, setup, LIMITS)
    assert run.passed == len(tests), run.judge.stderr.decode()


def test_stdin_cases_compare_stdout_outside():
    cases = [StdinCase("1 2\n", "3\n"), StdinCase("40 2\n", "42  \n\n")]
    good = "import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(1)"  # exit() ends a run normally
    assert run_stdin_cases(good, cases, limits=LIMITS).passed == 2
    assert run_stdin_cases("print(3)", cases, limits=LIMITS).passed == 1
    assert run_stdin_cases("print(3)\nraise RuntimeError", cases, limits=LIMITS).passed == 0
    big = [StdinCase("", "z" * 300_000 + "\n")]  # beyond the default 64 KiB output cap
    assert run_stdin_cases("print('z' * 300_000)", big, limits=LIMITS).passed == 1


def test_stdin_cases_task_data():
    assert task_stdin_cases({"tests": ["pass"]}) is None
    assert task_stdin_cases({"stdin_cases": [{"input": "1", "output": "1"}]}) == [StdinCase("1", "1")]
    with pytest.raises(CodeTaskError, match="puzzle.stdin_cases"):
        task_stdin_cases({"stdin_cases": [{"input": 1, "output": "1"}]})


PLAIN_VALUES = [
    None, True, 0, -5, 2**200, -(2**70), 1.5, float("inf"), "s\ud800", b"\x00b", bytearray(b"ab"), 3 + 4j,
    [1, [2, (3,)]], (1, "a"), {1: "a", (2, 3): [4]}, {1, 2}, frozenset({"x"}), range(1, 9, 2),
    collections.Counter("aab"), collections.OrderedDict(b=1, a=2), collections.deque([1, 2]),
    fractions.Fraction(3, 4), decimal.Decimal("1.10"),
]


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=lambda v: type(v).__name__)
def test_codec_round_trips_plain_values_exactly(value):
    back = decode(json.loads(json.dumps(encode(value))))
    assert type(back) is type(value) and back == value and repr(back) == repr(value)


def test_codec_accepts_only_exact_builtin_types():
    class MyInt(int):
        pass

    for value in (MyInt(1), [MyInt(1)], object(), {"k": lambda: 0}):
        with pytest.raises(NotPlain):
            encode(value)
    assert encode([MyInt(1)], ref=lambda obj: {"H": 7}) == [{"H": 7}]
    nested: list = []
    for _ in range(300):
        nested = [nested]
    with pytest.raises(NotPlain, match="nested"):
        encode(nested)


@pytest.mark.parametrize("tree", [
    {"T": [1], "S": [2]}, {"X": 1}, {"__class__": "int"}, {"H": 0}, {"T": 5}, {"S": [[1]]}, {"D": [[1]]},
    {"R": [0, 5, 0]}, {"C": ["1", 2]}, {"I": "zz"}, {"Fr": [1, 0]}, {"Dec": 5},
], ids=str)
def test_codec_rejects_anything_else(tree):
    with pytest.raises(ProtocolError):
        decode(tree)
