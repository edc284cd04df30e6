"""Math reward: boxed extraction, math_verify equivalence, bounded time on and off the main thread."""

from __future__ import annotations

import threading
import time

import pytest

from peirce.rewards.math import MAX_ANSWER_CHARS, MathRewardConfig, _HELPER, last_boxed, math_reward
from peirce.rewards.registry import get_reward
from peirce.tasks.domain import math_task


def _task(answer: str):
    return math_task("q", answer, id="math-t-0", split="test")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{5}", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{ {2}+3 }", "{2}+3"),
        ("\\boxed {7}", "7"),
        ("\\fbox{8}", "8"),
        ("\\boxed{3} and the \\boxed command", "3"),
        ("truncated \\boxed{3", None),
        ("no box", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_last_boxed_is_linear_on_hostile_input():
    t0 = time.perf_counter()
    assert last_boxed("\\boxed{" * 200_000) is None
    assert last_boxed("\\boxed " * 200_000) is None
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    "gold, response",
    [
        ("5", "The answer is \\boxed{5}."),
        ("\\frac{3}{4}", "\\boxed{0.75}"),
        ("\\frac{3}{4}", "\\boxed{\\frac{6}{8}}"),
        ("5\\sqrt{2}", "\\boxed{\\sqrt{50}}"),
        ("9\\pi", "\\boxed{9\\pi}"),
        ("4", "\\boxed{x=4}"),
    ],
)
def test_equivalent_answers_score_one(gold, response):
    r = get_reward("math")(_task(gold), response)
    assert (r.reward, r.correct, r.format_ok) == (1.0, True, True)


@pytest.mark.parametrize("gold, response", [("5", "\\boxed{6}"), ("\\frac{3}{4}", "\\boxed{\\frac{4}{3}}"), ("9\\pi", "\\boxed{9}")])
def test_wrong_answers_score_zero(gold, response):
    r = get_reward("math")(_task(gold), response)
    assert (r.reward, r.correct, r.format_ok) == (0.0, False, True)


def test_unboxed_answer_is_format_failure():
    r = get_reward("math")(_task("5"), "the answer is 5")
    assert (r.reward, r.format_ok, r.correct) == (0.0, False, None)


def test_huge_answer_is_not_parsed():
    r = get_reward("math")(_task("5"), "\\boxed{" + "1+" * MAX_ANSWER_CHARS + "1}")
    assert r.reward == 0.0 and r.correct is None


def test_gold_from_solution_text_when_puzzle_lacks_answer():
    from peirce.tasks.base import Task

    task = Task(id="m", family="math", level=1, split="test", puzzle={}, puzzle_text="q", solution_text="\\boxed{12}")
    assert get_reward("math")(task, "\\boxed{12}").reward == 1.0


def test_blowup_times_out_on_main_thread():
    fn = math_reward(MathRewardConfig(timeout_s=1, isolation="inline"))
    t0 = time.monotonic()
    r = fn(_task("1"), "\\boxed{2^{2^{2^{40}}}}")
    assert r.reward == 0.0 and time.monotonic() - t0 < 15


def test_helper_process_off_main_thread_and_restart_after_overrun():
    """The reward worker scores in a thread, where SIGALRM timeouts cannot work."""
    fn = get_reward("math")
    results: dict[str, object] = {}

    def work():
        results["ok"] = fn(_task("\\frac{1}{2}"), "\\boxed{0.5}")
        restarts = _HELPER.restarts
        t0 = time.monotonic()
        results["hang"] = math_reward(MathRewardConfig(timeout_s=1))(_task("1"), "\\boxed{2^{2^{2^{40}}}}")
        results["hang_s"] = time.monotonic() - t0
        results["restarted"] = _HELPER.restarts - restarts
        results["after"] = fn(_task("7"), "\\boxed{7}")

    th = threading.Thread(target=work)
    th.start()
    th.join(180)
    assert not th.is_alive()
    assert results["ok"].reward == 1.0
    assert results["hang"].correct is None and results["hang"].reward == 0.0 and results["hang_s"] < 10
    assert results["restarted"] == 1
    assert results["after"].reward == 1.0


def test_config_validates():
    with pytest.raises(ValueError, match="timeout_s"):
        MathRewardConfig(timeout_s=0)
    with pytest.raises(ValueError, match="isolation"):
        MathRewardConfig(isolation="thread")
