"""Code reward: run the task's tests against the response's last ```python block.

The program and its tests run in `peirce.rewards.sandbox` (separate process, limits,
no network, chroot, own uid where the machine allows). A harness inside executes the
program once, then each test in the same namespace, and reports each verdict on stdout
as a line tagged with a per-run random nonce, right after that test finishes; the
parent counts only tagged lines. So an early `exit(0)`, a crash, a kill at the time
limit or an infinite loop in test k leaves tests k.. unreported, i.e. failed, and
plain prints cannot pose as verdicts. (A program that deliberately searches the
harness's memory for the nonce could forge verdicts: the sandbox contains code, it does
not make a hostile program's self-report trustworthy.)

Task data (Task.puzzle): `tests` (list of Python statements, typically asserts) or
`test_program` (a program defining `check(candidate)`, HumanEval style, run as one
test with `entry_point`), optional `setup` (code run before the program, e.g. MBPP's
`test_setup_code`).
"""

from __future__ import annotations

import functools
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from peirce.rewards.registry import RewardFn, RewardResult, register_reward
from peirce.rewards.sandbox import SandboxLimits, SandboxResult, run_python
from peirce.tasks.base import Task

MAX_PROGRAM_CHARS = 100_000

# Runs inside the sandbox; reads the job from stdin. Kept free of f-strings for clarity.
HARNESS = r"""
import json, os, sys
job = json.loads(sys.stdin.read())
sys.stdin.close()
tag = job.pop("nonce").encode()
out = os.dup(1)
ns = {"__name__": "solution"}  # a main block in the answer does not run
def report(i, ok):
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    os.write(out, b"\n" + tag + b" " + str(i).encode() + b" " + (b"1" if ok else b"0") + b"\n")
try:
    exec(compile(job["setup"] + "\n" + job["program"], "<solution>", "exec"), ns)
    loaded = True
except BaseException as exc:
    loaded = False
    print("program failed:", type(exc).__name__, exc, file=sys.stderr)
for i, test in enumerate(job["tests"]):
    ok = False
    if loaded:
        try:
            exec(compile(test, "<test %d>" % i, "exec"), ns)
            ok = True
        except BaseException as exc:
            print("test", i, "failed:", type(exc).__name__, exc, file=sys.stderr)
    report(i, ok)
"""


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
    passed: int
    total: int
    sandbox: SandboxResult

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


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
    raise CodeTaskError("code task needs puzzle.tests (list of str) or puzzle.test_program (str)")


def run_tests(program: str, tests: list[str], setup: str = "", limits: SandboxLimits = SandboxLimits()) -> TestRun:
    """Run `program` then each test in one sandboxed interpreter; count verified passes."""
    nonce = secrets.token_hex(16)
    job = json.dumps({"nonce": nonce, "program": program, "tests": tests, "setup": setup}).encode()
    res = run_python(HARNESS, stdin=job, limits=limits)
    passed: set[int] = set()
    tag = nonce.encode()
    for line in res.stdout.splitlines():
        parts = line.split(b" ")
        if len(parts) == 3 and parts[0] == tag and parts[1].isdigit() and parts[2] == b"1":
            passed.add(int(parts[1]))
    passed &= set(range(len(tests)))
    return TestRun(passed=len(passed), total=len(tests), sandbox=res)


def score_code(task: Task, assistant_turn: str, config: CodeRewardConfig = CodeRewardConfig()) -> RewardResult:
    tests = task_tests(task.puzzle)
    program = extract_code(assistant_turn)
    if program is None or not program.strip() or len(program) > MAX_PROGRAM_CHARS:
        return RewardResult(reward=0.0, format_ok=False, correct=None, answer=None)
    setup = task.puzzle.get("setup") or ""
    if not isinstance(setup, str):
        raise CodeTaskError(f"puzzle.setup must be a string, got {setup!r:.200}")
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
