"""A reusable shared-memory file that carries one full state dict to vLLM's worker process.

Why not a fresh safetensors file per load (the previous path): `save_file` serialises
every tensor to bytes before writing (two copies), and a fresh 257 MB file in /dev/shm
faults in every page again on each load. Here the engine keeps one file, sized once and
memory-mapped, and copies each tensor straight into its slot (casting to the served
dtype in the same pass); after the first load the pages are already there. The worker
receives the path and a small table (`RawSpec` rows) over vLLM's RPC and reads the
tensors as views of its own mapping (`raw_tensors`), so it copies each byte once, into
the model. Slots are 64-byte aligned, so a dtype view is always legal.

The file holds one version at a time: the engine writes and loads under its lock, and
vLLM copies every tensor into its own parameters during `reload_weights` (the CPU
backend repacks them), so nothing refers to the file once a load returns.
"""

from __future__ import annotations

import math
import mmap
import os
import uuid
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from peirce.transport.shm_files import RawSpec, align_up, close_and_unlink, create_owned, sweep_orphans


def layout(named: Sequence[tuple[str, Any]], dtype: Any) -> tuple[list[RawSpec], int]:
    """Slots for `named` (cast to `dtype`) back to back in order; returns (table, file size)."""
    table: list[RawSpec] = []
    end = 0
    name = str(dtype).removeprefix("torch.")
    for n, t in named:
        offset = align_up(end)
        table.append((n, name, [int(s) for s in t.shape], offset))
        end = offset + math.prod(t.shape) * dtype.itemsize
    return table, end


class ShmStage:
    """One /dev/shm file (or temp file where /dev/shm is absent), rewritten every load."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, f"peirce-weights-{os.getpid()}-{uuid.uuid4().hex[:8]}.bin")
        self._map: mmap.mmap | None = None
        self._size = 0
        self._fd = [-1]  # holds the file's liveness lock (shm_files.create_owned); shared with the finalizer
        self._finalizer = weakref.finalize(self, _release, self._fd, self.path)  # never leave 100s of MB

    def write(self, named: Sequence[tuple[str, Any]], dtype: Any) -> tuple[list[RawSpec], int]:
        """Copy every tensor (cast to `dtype`) into its slot; returns (table, payload bytes)."""
        import torch

        from peirce.transport.buckets import copy_into

        table, size = layout(named, dtype)
        if self._map is None or self._size != size or not os.path.exists(self.path):  # e.g. /dev/shm cleaned
            self._map = None
            if self._fd[0] < 0 or not os.path.exists(self.path):
                _release(self._fd, self.path)
                sweep_orphans(os.path.dirname(self.path))  # files of engines that died without cleaning up
                self._fd[0] = create_owned(self.path)
            os.ftruncate(self._fd[0], max(size, 1))
            self._map = mmap.mmap(self._fd[0], max(size, 1))
            self._size = size
        flat = torch.frombuffer(self._map, dtype=torch.uint8)
        for (_, t), (_, _, shape, offset) in zip(named, table):
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes:
                copy_into(flat[offset:offset + nbytes], t, dtype)
        return table, sum(math.prod(s) for _, _, s, _ in table) * dtype.itemsize

    def close(self) -> None:
        self._map = None  # views handed out keep their own reference; the mapping goes with them
        self._finalizer()


def _release(fd: list[int], path: str) -> None:
    """Close the stage's descriptor (the box the finalizer shares) and remove its file."""
    close_and_unlink(fd[0], path)
    fd[0] = -1


def raw_tensors(path: str, table: Sequence[RawSpec]) -> Iterator[tuple[str, Any]]:
    """(name, tensor) views of a file written by `ShmStage.write` (read side, no copy)."""
    import torch

    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        mapped = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)  # private: writable views, no warning
    flat = torch.frombuffer(mapped, dtype=torch.uint8)
    for name, dtype, shape, offset in table:
        dt = getattr(torch, dtype)
        n = math.prod(shape) * dt.itemsize
        if offset + n > size:
            raise ValueError(f"raw weights {path!r}: {name} ends at byte {offset + n} > file size {size}")
        yield name, flat[offset:offset + n].view(dt).view(shape)
