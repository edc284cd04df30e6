"""Checkpoint folder layout, RNG capture and the pieces the engine writes around DeepSpeed.

A checkpoint is one folder that is at the same time a Hugging Face model folder, so
vLLM, transformers and mergekit load it directly, and a resumable training state:

    <dir>/config.json, model.safetensors, generation_config.json, tokenizer files
    <dir>/peirce-checkpoint.json   manifest: format, policy_version, zero stage, world size
    <dir>/extra_state.json         caller state (curriculum position, data cursor, ...)
    <dir>/rng/rank<k>.pt           python / numpy / torch (+ CUDA) RNG states per rank
    <dir>/deepspeed/<tag>/         DeepSpeed's own files: fp32 master weights, optimizer
                                   moments, lr scheduler (partitioned under ZeRO)

The folder is written under a temporary name and renamed at the end, so a crash never
leaves a half checkpoint that looks complete.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "peirce-learner-checkpoint/1"
MANIFEST = "peirce-checkpoint.json"
EXTRA_STATE = "extra_state.json"
DS_SUBDIR = "deepspeed"
DS_TAG = "state"

# Files that make a model folder usable by a tokenizer; weights and config are written fresh.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


class CheckpointError(RuntimeError):
    pass


@dataclass(frozen=True)
class Manifest:
    format: str
    policy_version: int
    zero_stage: int
    world_size: int
    bf16: bool
    source_model_dir: str

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST
        if not path.exists():
            raise CheckpointError(f"{directory} is not a learner checkpoint: {MANIFEST} is missing")
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise CheckpointError(f"{path}: format must be {FORMAT!r}, got {raw.get('format')!r}")
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})

    def check_compatible(self, *, zero_stage: int, world_size: int) -> None:
        """DeepSpeed's partitioned optimizer files only load into the same layout."""
        if (self.zero_stage, self.world_size) != (zero_stage, world_size):
            raise CheckpointError(
                f"checkpoint was saved with zero_stage={self.zero_stage}, world_size={self.world_size}; "
                f"this engine has zero_stage={zero_stage}, world_size={world_size}"
            )


def capture_rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng(directory: Path, rank: int) -> None:
    (directory / "rng").mkdir(parents=True, exist_ok=True)
    torch.save(capture_rng_state(), directory / "rng" / f"rank{rank}.pt")


def load_rng(directory: Path, rank: int) -> None:
    path = Path(directory) / "rng" / f"rank{rank}.pt"
    if not path.exists():
        raise CheckpointError(f"RNG state for rank {rank} is missing: {path}")
    # numpy's state holds an ndarray and python's a tuple: not loadable with weights_only.
    restore_rng_state(torch.load(path, weights_only=False))


def write_extra_state(directory: Path, extra_state: dict[str, Any]) -> None:
    """JSON, so the caller's state stays readable and never unpickles code on load."""
    if not isinstance(extra_state, dict):
        raise CheckpointError(f"extra_state must be a dict, got {type(extra_state).__name__}")
    try:
        text = json.dumps(extra_state, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"extra_state must be JSON-serialisable: {e}") from None
    (directory / EXTRA_STATE).write_text(text)


def read_extra_state(directory: Path) -> dict[str, Any]:
    path = Path(directory) / EXTRA_STATE
    return json.loads(path.read_text()) if path.exists() else {}


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    copied = []
    for name in _TOKENIZER_FILES:
        if (Path(src) / name).exists():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    if "tokenizer.json" not in copied and "tokenizer.model" not in copied and "vocab.json" not in copied:
        raise CheckpointError(f"no tokenizer files found in {src}: the checkpoint would not be loadable by vLLM")
    return copied


def save_hf_weights(hf_model: torch.nn.Module, state_dict: dict[str, torch.Tensor], directory: Path) -> None:
    """config.json + safetensors from an explicit (gathered) state dict."""
    hf_model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)


def staging_dir(final: Path) -> Path:
    """Shared (all ranks compute the same name) temporary folder beside the final one."""
    final = Path(final)
    return final.parent / f".{final.name}.partial"


def begin(final: Path) -> Path:
    tmp = staging_dir(final)
    if tmp.exists():
        shutil.rmtree(tmp)  # leftover of a crashed save
    tmp.mkdir(parents=True)
    return tmp


def commit(final: Path) -> None:
    """Replace `final` with the staged folder (rank 0 only, after all ranks wrote)."""
    final, tmp = Path(final), staging_dir(final)
    if final.exists():
        old = final.parent / f".{final.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
