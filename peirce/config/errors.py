"""Config error types and the value shortener every config message uses.

A config value can be megabytes (a pasted file, an alias bomb that slipped through,
a huge override); messages show at most ~200 characters of it, plus its full length.
"""

from __future__ import annotations

import reprlib
from typing import Any

SHOWN_CHARS = 200


class ConfigError(ValueError):
    """A config problem; the message names the dotted field, the rule and the value."""


class FieldRuleError(ValueError):
    """Raised inside a model validator for a rule on a *nested* field (pydantic would
    report the validator's own model): `field` is dotted relative to that model, and
    the formatter appends it to the location and shows `value` as the one that broke it."""

    def __init__(self, field: str, rule: str, value: Any) -> None:
        super().__init__(rule)
        self.field = field
        self.rule = rule
        self.value = value


def _bounded_repr(limit: int) -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = 20
    r.maxlevel = 4
    return r


_REPR = _bounded_repr(SHOWN_CHARS)


def short(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A repr of `value` of at most ~`limit` characters (reprlib: a huge value is never
    rendered whole), with the full length noted for long strings."""
    text = (_REPR if limit == SHOWN_CHARS else _bounded_repr(limit)).repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    if isinstance(value, (str, bytes)) and len(value) > limit:
        text += f" ({len(value)} chars)"
    return text
