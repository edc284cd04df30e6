"""Tag parsing: last answer block, strict format, never raises, linear time on garbage."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peirce.rewards.parsing import check_format, extract_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>42</answer>", "42"),
        ("<think>x</think>\n<answer>\n(1) A is True\n</answer>", "(1) A is True"),
        ("<answer>1</answer> then <answer> 2 </answer>", "2"),  # last block wins
        ("<answer>1</answer> then <answer>2", "1"),  # unclosed trailing block is ignored
        ("<answer>a<answer>b</answer>", "a<answer>b"),  # same as the reference's non-greedy scan
        ("no tags at all", None),
        ("</answer><answer>", None),
        ("<answer></answer>", ""),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def _regex_reference(text):
    """The reference implementation's scan, for comparison on random inputs."""
    import re

    matches = list(re.finditer(r"<answer>(.*?)</answer>", text, re.DOTALL))
    return matches[-1].group(1).strip() if matches else None


_PIECES = ["<answer>", "</answer>", "<think>", "</think>", "x", " ", "\n", "<", ">", "answer", "/"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30))
def test_extract_answer_matches_reference_regex(pieces):
    text = "".join(pieces)
    assert extract_answer(text) == _regex_reference(text)


@pytest.mark.parametrize(
    "turn, ok",
    [
        ("<think>r</think><answer>a</answer>", True),
        ("<think>r</think>\n<answer>\na</answer> trailing", True),
        ("<think>r</think>", False),
        ("<answer>a</answer><think>r</think>", False),  # wrong order
        ("<think><think>r</think><answer>a</answer>", False),  # duplicate tag
        ("<think>r</think><answer>a</answer><answer>b</answer>", False),
        ("<think>r<answer>a</think></answer>", False),
        ("r</think><answer>a</answer>", False),  # pre-filled <think> missing from the turn
        ("", False),
    ],
)
def test_check_format(turn, ok):
    assert check_format(turn) is ok


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(text):
    assert extract_answer(text) is None or isinstance(extract_answer(text), str)
    assert check_format(text) in (True, False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_format_ok_implies_an_answer(pieces):
    text = "".join(pieces)
    if check_format(text):
        assert extract_answer(text) is not None


def test_non_str_input_is_rejected_quietly():
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert check_format(b"<think>") is False  # type: ignore[arg-type]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["tags", "opens", "random"])
def test_one_megabyte_of_garbage_completes(kind):
    rng = random.Random(0)
    if kind == "tags":
        text = "".join(rng.choice(_PIECES) for _ in range(250_000))[: 1 << 20]
    elif kind == "opens":  # worst case for naive backtracking: many opens, no close
        text = "<answer>" * ((1 << 20) // 8)
    else:
        text = "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(1 << 20))
    extract_answer(text)
    check_format(text)
    assert extract_answer(text + "<answer>z</answer>").endswith("z")
