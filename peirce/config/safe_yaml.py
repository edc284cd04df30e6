"""YAML with bounds: a config is small, so refuse what is not, before it costs anything.

PyYAML's SafeLoader builds an alias once and shares it, so a "billion laughs" file
loads in microseconds into a tiny DAG -- and then every walk over it (pydantic
validation, dumping, merging layers) visits each shared node once per reference,
which is exponential. So after composing a document we count its nodes *as if the
aliases were expanded* (memoised per node, so the count itself is linear) and refuse
more than MAX_NODES, or a recursive alias. Raw size and nesting depth are capped too.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from peirce.config.errors import ConfigError

MAX_BYTES = 1 << 20  # a shipped config is ~2 KB
MAX_NODES = 100_000  # expanded (aliases counted once per use); a shipped config has ~300


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: Node, limit: int = MAX_NODES) -> int:
    """Nodes in `root` with every alias expanded; raises ConfigError past `limit` or on a
    cycle. Iterative (no recursion limit) and memoised (linear in the composed nodes)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > limit:
                raise ConfigError(f"YAML expands to more than {limit} nodes (aliases counted per use); "
                                  "refusing it (an alias bomb?)")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigError("YAML has a recursive alias (an anchor used inside itself); refusing it")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


class BoundedSafeLoader(yaml.SafeLoader):
    """SafeLoader that checks each composed document's expanded size before constructing it."""

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        if node is not None:
            expanded_size(node)
        return node


def load_yaml(text: str | bytes, source: str = "YAML") -> Any:
    """Parse one YAML document with the bounds above; every failure is a ConfigError
    naming `source` (the file, or the override)."""
    return _load(text, source, all_documents=False)


def load_yaml_documents(text: str | bytes, source: str = "YAML") -> list[Any]:
    """Every document of a multi-document stream (`---`), e.g. a Kubernetes manifest."""
    return _load(text, source, all_documents=True)


def _load(text: str | bytes, source: str, all_documents: bool) -> Any:
    size = len(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    if size > MAX_BYTES:
        raise ConfigError(f"{source}: {size} bytes is more than the {MAX_BYTES}-byte limit for a config")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    try:
        if all_documents:
            return list(yaml.load_all(text, Loader=BoundedSafeLoader))  # noqa: S506 - a SafeLoader subclass
        return yaml.load(text, Loader=BoundedSafeLoader)  # noqa: S506
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
