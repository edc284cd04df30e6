"""Where peirce keeps its cache (embedded model, compiled extensions)."""

from __future__ import annotations

import os
from pathlib import Path


def peirce_home() -> Path:
    """`$PEIRCE_HOME`, default `~/.cache/peirce`; created on first use."""
    home = Path(os.environ.get("PEIRCE_HOME", Path.home() / ".cache" / "peirce")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home
