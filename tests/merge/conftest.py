"""Merge fixtures: four tiny random Llamas (a base and three specialists), one seed each.

The seeded tiny models are cached under $PEIRCE_HOME (built once, ~5 s each); tests that
need exactly known deltas build float32 variants of the base with `merge_helpers.write_variant`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from merge_helpers import SEEDS, SPECIALISTS, load_state


@pytest.fixture(scope="session")
def quartet() -> dict[str, Path]:
    """name -> folder for base + three specialists (same architecture, different seeds)."""
    from peirce.model.tiny import build_tiny_llama

    return {name: build_tiny_llama(seed=seed) for name, seed in SEEDS.items()}


@pytest.fixture(scope="session")
def quartet_states(quartet) -> dict[str, dict]:
    return {name: load_state(folder) for name, folder in quartet.items()}


@pytest.fixture
def cfg_dict(quartet) -> dict:
    """A valid linear config over the quartet's specialists (reference weights by default)."""
    return {"method": "linear", "models": {n: str(quartet[n]) for n in SPECIALISTS}, "dtype": "float32"}
