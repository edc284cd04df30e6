"""Code reward: run the task's tests against the response's last ```python block.

Threat model. The program is hostile and may know this module's source. It may exit at
any point, patch anything in its own interpreter (builtins, sys.modules, json, atexit),
walk its frames and heap, print anything, write anything to any descriptor it holds,
return objects whose `__eq__`/`__bool__`/`__hash__`/`__repr__`/`__reduce__` lie or
subclasses of int/str, NaNs, or huge values. None of that may turn a failed test into
a pass. Defence: **the verdict is computed outside the process that runs the program,
from plain data only** (peirce.rewards.code_harness has the in-sandbox side):

- Assert / `check(candidate)` tests: two sandboxes. The *program* process runs setup +
  program and only answers requests on a pipe pair. The *judge* process never runs model
  code: it runs the setup and the tests itself; a name a test uses that the judge lacks
  (the candidate function, `Solution`) is looked up in the program and called across the
  pipes. What comes back is decoded as plain data (exact builtin types via tagged JSON;
  never unpickled or evaluated) or stays an opaque handle whose comparison and hashing
  are local identity. So `assert f(x) == y` compares data with `y` in the judge, and `y`
  (like every test) never enters the program's process, nor does anything the judge could
  be tricked with. A malformed reply, a dead program or a broken pipe fails that test and
  every later one (the judge's ProgramGone is a BaseException, so a test's own
  `except Exception` cannot swallow it). Modules a test reaches through the program's
  globals (`math.isclose` after the program's `import math`) are the judge's own copies.
- stdin/stdout cases: the program runs once per case with the case on stdin; this
  process compares the captured stdout (lines, trailing spaces ignored).
- Verdicts are one "i ok" line per test on the judge's stdout, a pipe only the judge
  holds: the program's own stdout is captured separately (and capped), so printing
  forged verdicts or 64 KiB of anything changes nothing.

What this relies on: the sandbox's process separation (peirce.rewards.sandbox). With
its "uid" layer each process has its own uid, so the program cannot signal, ptrace or
open /proc/<pid>/fd of the judge or of this process; with "fs" there is no /proc at all.
Without them (not root) a same-uid program could reach sibling processes through /proc,
as it could reach this one. Residual, by construction of the tests themselves: a test
that `eval`s a string the program returned runs it in the judge; a test that uses a
program-defined helper (HumanEval's `poly`) trusts that helper, as the original harness
does; copy semantics mean a test that checks an argument mutated in place fails.

Task data (Task.puzzle): `tests` (list of Python statements, typically asserts),
`test_program` (a program defining `check(candidate)`, HumanEval style, run as one test
with `entry_point`), or `stdin_cases` (list of {"input", "output"} strings); optional
`setup` (code run before the program and before the tests, e.g. MBPP's
`test_setup_code`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from peirce.rewards import code_harness
from peirce.rewards.registry import RewardFn, RewardResult, register_reward
from peirce.rewards.sandbox import SandboxLimits, SandboxResult, run_python
from peirce.tasks.base import Task

MAX_PROGRAM_CHARS = 100_000
MAX_VALUE_BYTES = 16 << 20  # one value (JSON) the program returns to the judge
VERDICT_LINE_BYTES = 16  # judge stdout room per test ("12345 1\n")
_HARNESS = inspect.getsource(code_harness)


def _harness(role: str) -> str:
    return f"{_HARNESS}\nmain({role!r})\n"


class CodeTaskError(ValueError):
    """The task's own data is malformed (names the field)."""


@dataclass(frozen=True)
class CodeRewardConfig:
    """mode "fraction": reward = passed / total; "all": 1.0 only when every test passes."""

    mode: Literal["fraction", "all"] = "fraction"
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def __post_init__(self) -> None:
        if self.mode not in ("fraction", "all"):
            raise ValueError(f"CodeRewardConfig.mode must be 'fraction' or 'all', got {self.mode!r}")


@dataclass(frozen=True)
class TestRun:
    """passed/total tests; `sandbox` is the program's run (the last one for stdin cases),
    `judge` the judge's (None for stdin cases)."""

    passed: int
    total: int
    sandbox: SandboxResult
    judge: SandboxResult | None = None

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


@dataclass(frozen=True)
class StdinCase:
    input: str
    output: str


def extract_code(text: str) -> str | None:
    """Body of the last complete ```python (or ```py) fenced block; falling back to the
    last complete bare ``` block. Linear time; None when there is none."""
    if not isinstance(text, str):
        return None
    last_tagged = last_any = None
    pos = 0
    while True:
        start = text.find("```", pos)
        if start < 0:
            break
        eol = text.find("\n", start + 3)
        if eol < 0:
            break
        end = text.find("```", eol + 1)
        if end < 0:
            break
        lang = text[start + 3 : eol].strip().lower()
        body = text[eol + 1 : end]
        last_any = body
        if lang in ("python", "py", "python3"):
            last_tagged = body
        pos = end + 3
    return last_tagged if last_tagged is not None else last_any


def task_tests(puzzle: dict[str, Any]) -> list[str]:
    """The list of test snippets a code task defines; CodeTaskError names a bad field."""
    tests = puzzle.get("tests")
    program = puzzle.get("test_program")
    if tests is not None:
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise CodeTaskError(f"puzzle.tests must be a non-empty list of strings, got {tests!r:.200}")
        return list(tests)
    if isinstance(program, str) and program.strip():
        entry = puzzle.get("entry_point")
        if not isinstance(entry, str) or not entry.isidentifier():
            raise CodeTaskError(f"puzzle.entry_point must be an identifier when test_program is used, got {entry!r}")
        return [f"{program}\ncheck({entry})"]
    raise CodeTaskError("code task needs puzzle.tests (list of str), puzzle.test_program (str) or puzzle.stdin_cases")


def task_stdin_cases(puzzle: dict[str, Any]) -> list[StdinCase] | None:
    """The task's stdin/stdout cases, None when it has none; CodeTaskError names a bad field."""
    cases = puzzle.get("stdin_cases")
    if cases is None:
        return None
    ok = isinstance(cases, list) and cases and all(
        isinstance(c, dict) and isinstance(c.get("input"), str) and isinstance(c.get("output"), str) for c in cases)
    if not ok:
        raise CodeTaskError(f"puzzle.stdin_cases must be a non-empty list of {{'input': str, 'output': str}}, "
                            f"got {cases!r:.200}")
    return [StdinCase(c["input"], c["output"]) for c in cases]


def run_tests(program: str, tests: list[str], setup: str = "", limits: SandboxLimits = SandboxLimits()) -> TestRun:
    """Run `program` in one sandbox and `tests` in a judge sandbox that calls into it; count
    the judge's verdicts (see the module docstring)."""
    to_judge_r, to_judge_w = os.pipe()
    to_program_r, to_program_w = os.pipe()
    common = {"setup": setup, "max_frame": MAX_VALUE_BYTES}
    program_job = json.dumps({**common, "program": program, "rin": to_program_r, "rout": to_judge_w}).encode()
    judge_job = json.dumps({**common, "tests": tests, "rin": to_judge_r, "rout": to_program_w}).encode()
    result: list[SandboxResult | BaseException] = []

    def program_side() -> None:
        try:
            result.append(run_python(_harness("program"), program_job, limits, pass_fds=(to_program_r, to_judge_w)))
        except BaseException as exc:  # re-raised below, in the caller's thread
            result.append(exc)

    thread = threading.Thread(target=program_side, name="code-reward-program", daemon=True)
    thread.start()
    try:
        judge_limits = dataclasses.replace(
            limits, output_bytes=max(limits.output_bytes, VERDICT_LINE_BYTES * len(tests) + 64))
        judge = run_python(_harness("judge"), judge_job, judge_limits, pass_fds=(to_judge_r, to_program_w))
    finally:
        thread.join()  # the judge's end of the pipes is closed: the program sees EOF and exits
    if isinstance(result[0], BaseException):
        raise result[0]
    return TestRun(passed=len(_verdicts(judge.stdout, len(tests))), total=len(tests), sandbox=result[0], judge=judge)


def _verdicts(stdout: bytes, total: int) -> set[int]:
    passed = set()
    for line in stdout.splitlines():
        parts = line.split(b" ")
        if len(parts) == 2 and parts[0].isdigit() and parts[1] == b"1":
            passed.add(int(parts[0]))
    return passed & set(range(total))


def run_stdin_cases(program: str, cases: list[StdinCase], setup: str = "",
                    limits: SandboxLimits = SandboxLimits()) -> TestRun:
    """Run `program` as __main__ once per case with the case on stdin; a case passes when it
    exits normally (SystemExit counts as normal) and its stdout matches line by line."""
    job = json.dumps({"setup": setup, "program": program}).encode()
    passed, res = 0, None
    for case in cases:
        want = case.output.encode()
        case_limits = dataclasses.replace(limits, output_bytes=limits.output_bytes + 2 * len(want))
        res = run_python(_harness("stdio"), b"%d\n" % len(job) + job + case.input.encode(), case_limits)
        ok = res.returncode == 0 and not res.timed_out and not res.stdout_truncated
        passed += ok and _lines(res.stdout.decode("utf-8", "replace")) == _lines(case.output)
    return TestRun(passed=passed, total=len(cases), sandbox=res)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


def score_code(task: Task, assistant_turn: str, config: CodeRewardConfig = CodeRewardConfig()) -> RewardResult:
    cases = task_stdin_cases(task.puzzle)
    tests = task_tests(task.puzzle) if cases is None else []
    program = extract_code(assistant_turn)
    if program is None or not program.strip() or len(program) > MAX_PROGRAM_CHARS:
        return RewardResult(reward=0.0, format_ok=False, correct=None, answer=None)
    setup = task.puzzle.get("setup") or ""
    if not isinstance(setup, str):
        raise CodeTaskError(f"puzzle.setup must be a string, got {setup!r:.200}")
    if cases is not None:
        run = run_stdin_cases(program, cases, setup, config.limits)
    else:
        run = run_tests(program, tests, setup, config.limits)
    all_pass = run.passed == run.total
    reward = run.fraction if config.mode == "fraction" else float(all_pass)
    return RewardResult(reward=reward, format_ok=True, correct=all_pass, answer=program)


def code_reward(config: CodeRewardConfig) -> RewardFn:
    """A registry-shaped code reward with custom mode/limits."""
    return functools.partial(score_code, config=config)


@register_reward("code")
def code(task: Task, assistant_turn: str) -> RewardResult:
    """Fraction of the task's tests the last ```python block passes, run sandboxed."""
    return score_code(task, assistant_turn)
