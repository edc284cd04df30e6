"""Code reward: extraction, per-test verdicts from the sandboxed harness, modes."""

from __future__ import annotations

import pytest

from peirce.rewards.code import (
    CodeRewardConfig,
    CodeTaskError,
    code_reward,
    extract_code,
    run_tests,
    score_code,
    task_tests,
)
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
