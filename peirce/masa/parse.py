"""Read a meta rollout's prediction: the last JSON object with a known key. Never raises.

Rules (a part that breaks one is None and scores 0):
- The object: among the JSON objects that decode from a `{"` in the last MAX_TAIL_CHARS
  characters, the one that *ends* last and has any of KEYS (so an enclosing object beats
  one nested in it; a later object beats an earlier one). Starts are tried from the end,
  at most MAX_ATTEMPTS of them, and only until MAX_DECODE_CHARS characters have been
  decoded in all (a failed attempt counts up to where it failed; one that hit the
  recursion limit counts the whole rest of the tail), so hostile text (a megabyte of `{`,
  deep nesting, an unterminated string, many long overlapping candidates) costs at most
  about MAX_DECODE_CHARS + MAX_TAIL_CHARS characters of decoding. The true answer is
  normally the last object, so it is the first attempt.
- notions: `notions`, else its alias `math_notion` (the released code's key): a list of at
  most MAX_NOTIONS strings of at most MAX_NOTION_CHARS each; strings are stripped, empty
  ones dropped. A string instead of a list is the wrong type (the released code splits it
  on commas; peirce does not: a prediction should be the list the prompt asked for).
- pass_rate: an integer 0..k. A bool is not an integer; a float (3.0 too) is the wrong type.
- solution_length: an integer >= 1 (bool and float: wrong type).
- Integers longer than MAX_INT_DIGITS characters, NaN and +-Infinity are the wrong type
  for every field (they never become Python numbers, so no slow big-int conversion).
- A key of the wrong type does not fall back to an earlier object: the last one decides.
"""

from __future__ import annotations

import json
import re
from typing import Any

from peirce.masa.types import MetaPrediction

KEYS = ("notions", "math_notion", "pass_rate", "solution_length")
MAX_TAIL_CHARS = 64 * 1024
MAX_ATTEMPTS = 256
MAX_DECODE_CHARS = 2 * MAX_TAIL_CHARS
MAX_INT_DIGITS = 18
MAX_NOTIONS = 64
MAX_NOTION_CHARS = 256

_START = re.compile(r'\{\s*"')


class _Wrong:
    """A decoded value that no field accepts (a huge integer, NaN, Infinity, any float)."""

    def __repr__(self) -> str:
        return "<wrong type>"


WRONG = _Wrong()
_DECODER = json.JSONDecoder(
    parse_int=lambda s: int(s) if len(s) <= MAX_INT_DIGITS else WRONG,
    parse_float=lambda s: WRONG,
    parse_constant=lambda s: WRONG,
)


def candidate_starts(tail: str) -> list[int]:
    """Offsets in `tail` where a JSON object with a key may start, last first, at most MAX_ATTEMPTS."""
    starts = [m.start() for m in _START.finditer(tail)]
    return starts[::-1][:MAX_ATTEMPTS]


def scan(tail: str) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """(end, object) of each decoded object with a known key, and the characters decoded."""
    hits: list[tuple[int, dict[str, Any]]] = []
    work = 0
    for start in candidate_starts(tail):
        if work >= MAX_DECODE_CHARS:
            break
        try:
            obj, end = _DECODER.raw_decode(tail, start)
        except json.JSONDecodeError as exc:
            work += exc.pos - start + 1
            continue
        except (ValueError, RecursionError):  # ValueError: a too-long int in a key position, say
            work += len(tail) - start
            continue
        work += end - start
        if isinstance(obj, dict) and any(key in obj for key in KEYS):
            hits.append((end, obj))
    return hits, work


def last_object(text: str) -> dict[str, Any] | None:
    """The JSON object that ends last among those with any of KEYS (see the module rules)."""
    hits, _ = scan(text[-MAX_TAIL_CHARS:])
    return max(hits, key=lambda hit: hit[0])[1] if hits else None


def _notions(obj: dict[str, Any]) -> tuple[str, ...] | None:
    value = obj["notions"] if "notions" in obj else obj.get("math_notion")
    if not isinstance(value, list) or len(value) > MAX_NOTIONS:
        return None
    if not all(isinstance(n, str) and len(n) <= MAX_NOTION_CHARS for n in value):
        return None
    return tuple(s for n in value if (s := n.strip()))


def _integer(value: Any, lo: int, hi: int | None) -> int | None:
    if type(value) is not int or value < lo or (hi is not None and value > hi):  # bool is a subclass: excluded
        return None
    return value


def meta_reasoning(text: str) -> str | None:
    """The text between the first <meta> and the next </meta>, or None."""
    start = text.find("<meta>")
    if start < 0:
        return None
    end = text.find("</meta>", start + 6)
    return None if end < 0 else text[start + 6 : end]


def parse_prediction(text: str, k: int = 8) -> MetaPrediction:
    """The prediction in one meta response (pass_rate must be within 0..k). Never raises."""
    if not isinstance(text, str):
        return MetaPrediction()
    reasoning = meta_reasoning(text)
    obj = last_object(text)
    if obj is None:
        return MetaPrediction(reasoning=reasoning)
    return MetaPrediction(
        found=True,
        notions=_notions(obj),
        pass_rate=_integer(obj.get("pass_rate"), 0, k),
        solution_length=_integer(obj.get("solution_length"), 1, None),
        reasoning=reasoning,
    )
