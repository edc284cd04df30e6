"""Process memory: current and peak RSS, and keeping glibc's heap from hoarding freed memory.

torch's CPU tensors come from glibc malloc. Two measured problems on SmolLM2-135M:

- Growth across steps: glibc keeps freed chunks under its *dynamic* mmap threshold
  (raised to 32 MiB as soon as a large block is freed) inside its arenas. With the old
  learner (8 x 600 tokens, one micro-batch) RSS after steps 1-3 was 5.4, 6.1, 6.8 GiB
  with 3.3-4.7 GB free inside the arenas (`mallinfo2`) and 0.5 GB in use;
  `malloc_trim(0)` after each step brought it back to 2.4 GiB every time (`trim_heap`).
- Peak inflated by fragmentation: with activation checkpointing and 4096-token
  micro-batches the arenas held 1.0-1.2 GiB of free memory at the backward peak
  (peak RSS 3.76-3.84 GiB). A *fixed* 4 MiB threshold (`set_mmap_threshold`) serves
  activation-sized blocks from mmap and unmaps them on free: peak 3.25-3.32 GiB, steady
  over steps, at about the same speed (a 128 KiB threshold made steps 5x slower: page
  faults). Trimming at phase boundaries instead gave 3.25-3.69 GiB, not steady.

Both are process-wide settings: the learner runs in its own process (a Ray actor).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key} line")


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """High-water mark of the resident set size of this process (Linux VmHWM)."""
    return _status_kib("VmHWM") * 1024


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MAX_MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)


@functools.lru_cache(maxsize=1)
def _glibc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim, mallopt = libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return trim, mallopt


def trim_heap() -> bool:
    """Return free heap pages to the OS (glibc `malloc_trim(0)`); False where unavailable."""
    libc = _glibc()
    return bool(libc[0](0)) if libc is not None else False


def set_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold (disables its dynamic growth); False where unavailable."""
    if not 0 < nbytes <= MAX_MMAP_THRESHOLD:
        raise ValueError(f"mmap threshold must be in (0, {MAX_MMAP_THRESHOLD}] bytes, got {nbytes}")
    libc = _glibc()
    return bool(libc[1](M_MMAP_THRESHOLD, nbytes)) if libc is not None else False
