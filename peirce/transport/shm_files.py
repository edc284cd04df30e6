"""What every shared-memory file of weights has in common: where such files live, their
64-byte slot alignment, the table a vLLM worker reads them by, and quiet removal.

Here, below both of its users (the engine's staging file, `peirce.rollout.shm_stage`, and
the learner's weight arenas, `peirce.transport.shm_sync`), so transport needs nothing
from rollout.
"""

from __future__ import annotations

import os
import tempfile

ALIGN = 64  # every slot starts here, so a view of any dtype is legal

# (name, dtype name, shape, byte offset): plain types, so vLLM's RPC carries it as is
RawSpec = tuple[str, str, list[int], int]


def align_up(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def shm_dir() -> str:
    """/dev/shm where it is writable (memory, not disk), else the temp folder."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
