"""Math reward: 1.0 when the response's last `\\boxed{...}` is equivalent to the reference.

Equivalence is math_verify's (`parse` + `verify`: symbolic, numeric, sets, intervals,
equations). Time is bounded twice: answers longer than `MAX_ANSWER_CHARS` are not
parsed, and each check has a timeout. math_verify's own timeouts use SIGALRM, which only
works on the main thread, while the reward worker scores in a thread; off the main thread
(or with `isolation="process"`) checks run in one persistent helper process that is
killed and restarted when a check overruns (e.g. `2^{2^{2^{40}}}` makes sympy hang).
"""

from __future__ import annotations

import functools
import logging
import re
import multiprocessing as mp
import threading
from dataclasses import dataclass
from typing import Literal

from peirce.rewards.registry import RewardFn, RewardResult, register_reward
from peirce.tasks.base import Task

MAX_ANSWER_CHARS = 1_000
_BOX_OPEN_RE = re.compile(r"\\(?:boxed|fbox) *\{")  # a literal then one bounded run: linear


@dataclass(frozen=True)
class MathRewardConfig:
    """timeout_s: per check (parse + verify). isolation: "auto" (inline with SIGALRM
    timeouts on the main thread, helper process elsewhere), "inline", or "process"."""

    timeout_s: int = 5
    isolation: Literal["auto", "inline", "process"] = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.timeout_s, int) or isinstance(self.timeout_s, bool) or self.timeout_s < 1:
            raise ValueError(f"MathRewardConfig.timeout_s must be an int >= 1, got {self.timeout_s!r}")
        if self.isolation not in ("auto", "inline", "process"):
            raise ValueError(f"MathRewardConfig.isolation must be auto|inline|process, got {self.isolation!r}")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces balanced;
    None when there is none or it never closes. Linear time (one regex scan, one brace scan)."""
    if not isinstance(text, str):
        return None
    last = None
    for last in _BOX_OPEN_RE.finditer(text):
        pass
    if last is None:
        return None
    depth = 0
    for j in range(last.end() - 1, len(text)):
        ch = text[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[last.end() : j].strip()
    return None  # the last box never closes: a truncated answer


def _verify_inline(answer: str, gold: str, timeout_s: int | None) -> bool:
    from math_verify import parse, verify

    gold_parsed = parse(_boxed(gold), parsing_timeout=timeout_s)
    pred_parsed = parse(_boxed(answer), parsing_timeout=timeout_s)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))


def _boxed(s: str) -> str:
    s = s.strip()
    return s if last_boxed(s) is not None else "\\boxed{" + s + "}"


def _serve(conn) -> None:  # pragma: no cover - runs in the helper process
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (import before "ready" so timeouts exclude start-up)

    conn.send("ready")
    while True:
        try:
            answer, gold = conn.recv()
        except EOFError:
            return
        try:
            conn.send(_verify_inline(answer, gold, None))
        except Exception:
            conn.send(False)


class _HelperProcess:
    """One persistent verifier process; killed and replaced when a check overruns."""

    START_TIMEOUT_S = 120.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = None
        self._conn = None
        self.restarts = 0

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="peirce-math-verify")
        proc.start()
        child.close()
        if not parent.poll(self.START_TIMEOUT_S) or parent.recv() != "ready":
            proc.kill()
            raise RuntimeError("math verifier helper process did not start")
        self._proc, self._conn = proc, parent

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None
        self.restarts += 1

    def check(self, answer: str, gold: str, timeout_s: float) -> bool | None:
        """True/False, or None when the check overran `timeout_s` (helper restarted)."""
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._start()
            try:
                self._conn.send((answer, gold))
                if self._conn.poll(timeout_s):
                    return bool(self._conn.recv())
            except (EOFError, OSError, BrokenPipeError):
                pass
            self._kill()
            return None


_HELPER = _HelperProcess()


def answers_equivalent(answer: str, gold: str, config: MathRewardConfig = MathRewardConfig()) -> bool | None:
    """Is `answer` equivalent to `gold` (both raw LaTeX, boxed or not)? None: timed out."""
    inline = config.isolation == "inline" or (
        config.isolation == "auto" and threading.current_thread() is threading.main_thread()
    )
    if inline:
        return _verify_inline(answer, gold, config.timeout_s)
    return _HELPER.check(answer, gold, config.timeout_s)


def gold_answer(task: Task) -> str:
    gold = task.puzzle.get("answer")
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        gold = str(gold)
    if not isinstance(gold, str) or not gold.strip():
        boxed = last_boxed(task.solution_text)
        gold = boxed if boxed is not None else task.solution_text
    if not gold.strip():
        raise ValueError(f"math task {task.id!r} has no gold answer (puzzle.answer and solution_text are empty)")
    return gold


def score_math(task: Task, assistant_turn: str, config: MathRewardConfig = MathRewardConfig()) -> RewardResult:
    answer = last_boxed(assistant_turn)
    if answer is None or not answer:
        return RewardResult(reward=0.0, format_ok=False, correct=None, answer=None)
    if len(answer) > MAX_ANSWER_CHARS:
        return RewardResult(reward=0.0, format_ok=True, correct=None, answer=answer[:MAX_ANSWER_CHARS])
    ok = answers_equivalent(answer, gold_answer(task), config)
    return RewardResult(reward=1.0 if ok else 0.0, format_ok=True, correct=ok, answer=answer)


def math_reward(config: MathRewardConfig) -> RewardFn:
    """A registry-shaped math reward with a custom equivalence config."""
    return functools.partial(score_math, config=config)


@register_reward("math")
def math(task: Task, assistant_turn: str) -> RewardResult:
    """+1 when the last \\boxed{} answer is equivalent to the reference (math_verify), else 0."""
    return score_math(task, assistant_turn)
