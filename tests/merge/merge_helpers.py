"""Helpers shared by the merge tests (imported as a plain module, like transport_helpers)."""

from __future__ import annotations

import shutil
from pathlib import Path

SPECIALISTS = ("deduction", "induction", "abduction")
SEEDS = {"base": 0, "deduction": 1, "induction": 2, "abduction": 3}


def load_state(folder: Path) -> dict:
    """All tensors of an HF folder's safetensors shards, by checkpoint name."""
    from safetensors.torch import load_file

    state: dict = {}
    for shard in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(str(shard)))
    assert state, f"no safetensors in {folder}"
    return state


def write_variant(base_dir: Path, out_dir: Path, state: dict) -> Path:
    """An HF folder with `base_dir`'s config and tokenizer and the given tensors."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True)
    for f in base_dir.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy2(f, out_dir / f.name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir
