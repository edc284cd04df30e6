"""Tag parsing for `<think>...</think><answer>...</answer>` responses.

Model output is untrusted and can be huge: everything here uses `str.find`/`str.count`
(linear time, no regular expressions, so no backtracking traps) and never raises.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_FORMAT_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def extract_answer(text: str) -> str | None:
    """Content of the last `<answer>...</answer>` block, stripped; None when there is none.

    Blocks are matched left to right like the reference's non-greedy
    `<answer>(.*?)</answer>` scan, and the last complete one wins.
    """
    if not isinstance(text, str):
        return None
    last: tuple[int, int] | None = None
    pos = 0
    while True:
        start = text.find(ANSWER_OPEN, pos)
        if start < 0:
            break
        body = start + len(ANSWER_OPEN)
        end = text.find(ANSWER_CLOSE, body)
        if end < 0:
            break
        last = (body, end)
        pos = end + len(ANSWER_CLOSE)
    if last is None:
        return None
    return text[last[0] : last[1]].strip()


def check_format(assistant_turn: str) -> bool:
    """True when the whole assistant turn (including any pre-filled `<think>`) holds exactly
    one each of `<think>`, `</think>`, `<answer>`, `</answer>`, in that order."""
    if not isinstance(assistant_turn, str):
        return False
    positions = []
    for tag in _FORMAT_TAGS:
        if assistant_turn.count(tag) != 1:
            return False
        positions.append(assistant_turn.find(tag))
    return positions == sorted(positions)
