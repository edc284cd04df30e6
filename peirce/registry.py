"""One typed name -> object registry, used for advantages, policy losses, rewards and task families.

Why one class: the four hand-copied registries had drifted apart (one overwrote a
duplicate silently, three error classes, three message shapes). Now every registry
refuses a duplicate name the same way (naming both objects) and every lookup of an
unknown name raises `UnknownNameError`, whose message names the kind, the bad name,
the valid names and the closest one.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

SHOWN_CHARS = 60  # a name can come from a user file or the wire; messages show at most this much
_SUGGEST_MAX_CHARS = 200  # difflib is quadratic; a long name is no typo of a short one anyway


class UnknownNameError(KeyError, ValueError):
    """A lookup of a name nothing is registered under.

    A KeyError because it is a failed lookup, and a ValueError so that pydantic
    validators report it as a field error and `except ValueError` callers of the old
    advantage/loss registries still catch it.
    """

    def __init__(self, kind: str, name: str, known: Sequence[str]) -> None:
        super().__init__(unknown_name_message(kind, name, known))
        self.kind = kind
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])

    def __reduce__(self) -> tuple[type[UnknownNameError], tuple[str, str, tuple[str, ...]]]:
        return type(self), (self.kind, self.name, self.known)  # survives pickling (Ray)


class DuplicateNameError(ValueError):
    """Two different objects registered under one name."""


def shown_name(name: object) -> str:
    """repr of `name`, cut to ~SHOWN_CHARS with its full length noted."""
    text = repr(name)
    if len(text) <= SHOWN_CHARS:
        return text
    size = f" ({len(name)} chars)" if isinstance(name, str) else ""
    return text[:SHOWN_CHARS] + "..." + size


def unknown_name_message(kind: str, name: str, known: Sequence[str]) -> str:
    """`unknown <kind> 'x'; valid: a, b; did you mean 'a'?` (the hint only for a close match)."""
    msg = f"unknown {kind} {shown_name(name)}; valid: {', '.join(known) or '(none)'}"
    if isinstance(name, str) and len(name) <= _SUGGEST_MAX_CHARS:
        close = difflib.get_close_matches(name, list(known), n=1)
        if close:
            msg += f"; did you mean {close[0]!r}?"
    return msg


def qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


class Registry(Generic[T]):
    """Objects of one kind by name.

    kind: what the names denote, for messages ("reward", "task family", ...).
    loader: imports the modules whose decorators register the built-ins; run once, on
        the first miss or `names()`, so importing the registry stays cheap. It must be
        idempotent (imports are): threads racing the first lookup may each run it.
    error: the `UnknownNameError` subclass raised, so old `except` clauses keep their aim.
    """

    def __init__(self, kind: str, *, loader: Callable[[], None] | None = None,
                 error: type[UnknownNameError] = UnknownNameError) -> None:
        self.kind = kind
        self._loader = loader
        self._loaded = loader is None
        self._error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the object available as `get(name)`.

        Re-registering the same object, or one with the same qualified name (its module
        was executed again), replaces it; anything else under a taken name is an error.
        """

        def deco(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj and qualname(existing) != qualname(obj):
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is already registered to {qualname(existing)}; "
                    f"refusing to register {qualname(obj)} under the same name"
                )
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._entries:
            self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise self._error(self.kind, name, self.names()) from None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def _load(self) -> None:
        if self._loaded or self._loader is None:
            return
        self._loader()
        self._loaded = True  # only after success: a failed import is retried (and reported) next time


def import_modules(*modules: str) -> Callable[[], None]:
    """A loader importing `modules`; a module that does not exist (yet) is skipped, an
    import error inside one that does is raised."""

    def load() -> None:
        for full in modules:
            try:
                importlib.import_module(full)
            except ModuleNotFoundError as exc:
                if exc.name != full:
                    raise

    return load
