"""Load a YAML config, apply `a.b.c=value` overrides, validate, report errors by field.

Loading a file is the *load time* of a run: besides the schema's own rules, validation
runs with LOAD_CONTEXT, so model and data paths must exist and a train run must have
workers (see peirce.config.schema). Runtime re-validation (an actor rebuilding the
config from a dict, on any node) skips those environment checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from peirce.config.errors import ConfigError, FieldRuleError, short
from peirce.config.safe_yaml import MAX_BYTES, load_yaml

M = TypeVar("M", bound=BaseModel)

__all__ = ["ConfigError", "LOAD_CONTEXT", "apply_overrides", "dump_config", "format_validation_error",
           "load_config", "parse_override", "read_yaml_file", "validate"]

LOAD_CONTEXT: dict[str, Any] = {"load": True}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`rollout.workers=2` -> (["rollout", "workers"], 2). Values are parsed as YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {short(text)} must look like key.sub=value")
    value = load_yaml(raw, f"override {short(key.strip())}") if raw.strip() else ""
    return [p for p in key.strip().split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {short(item)}: {'.'.join(path[: i + 1])} is not a section")
            node = child
        node[path[-1]] = value
    return data


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: `dotted.field: rule (got value)`, the value cut to ~200 chars."""
    lines = [f"invalid config ({source}):"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        got = err.get("input")
        msg = err["msg"]
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldRuleError):
            loc += cause.field.split(".")
            got = cause.value
        where = ".".join(loc) or "<root>"
        shown = "" if isinstance(got, (dict, BaseModel)) else f" (got {short(got)})"
        lines.append(f"  {where}: {msg}{shown}")
    return "\n".join(lines)


def read_yaml_file(path: str | Path) -> dict[str, Any]:
    """A config file's top-level mapping ({} when empty), read with the size/alias bounds."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_BYTES:  # refuse before reading a huge file into memory
            raise ConfigError(f"{path}: {p.stat().st_size} bytes is more than the {MAX_BYTES}-byte limit for a config")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    loaded = load_yaml(raw, str(path))
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
    return loaded or {}


def validate(model: type[M], data: dict[str, Any], source: str, context: dict[str, Any] | None = LOAD_CONTEXT) -> M:
    """`model.model_validate` with errors as one ConfigError naming every bad field."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    except RecursionError:
        raise ConfigError(f"invalid config ({source}): nested too deeply") from None


def load_config(model: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    """Read YAML (or start from defaults), apply overrides, validate into `model` with load-time checks."""
    data = read_yaml_file(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return validate(model, data, str(path) if path is not None else "defaults")


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config (defaults filled in) so a run directory is self-describing."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False))
