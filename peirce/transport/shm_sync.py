"""Same-host weight sync through shared memory (`weight_sync.strategy: shm`).

Why: when a learner and its rollout engines share a machine (every single-node run), TCP
loopback copies each byte through the kernel twice and is the slowest part of a sync
(raw ZeroMQ: 0.215 s for SmolLM2's 257 MB on a 2-core avx512_bf16 host). Here the learner
packs each version into one of two files in /dev/shm, and ZeroMQ carries only the bucket
headers (checksums included) and where each bucket lies. The engine's vLLM worker reads the
tensors straight out of the learner's file, so the bytes cross between processes once, in
the load itself: the CPU counterpart of CUDA IPC. Handshake, versions, eviction and late
joiners are the ZeroMQ strategy's own (`WeightPublisher`, `WeightSubscriber`).

Safety: the publisher alternates two files and never repacks the one holding the latest
version (a late joiner reads it). A reader that falls two versions behind while it loads can
still see its file repacked under it, so every bucket's checksum is verified after the load
(`SharedVersion.intact`; the bytes did not travel, so a check on arrival would add a pass and
prove nothing about the load); a torn load is refused by the engine
(`peirce.rollout.engine.TornWeights`) and it serves nothing until a whole version is in.
Same host only: every reference names the sender's boot id, and a subscriber on another
host (or given a path outside the shared-memory folder) rejects it with a clear reason;
use `zmq` across nodes.
"""

from __future__ import annotations

import functools
import itertools
import mmap
import os
import re
import uuid
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from peirce.rollout.shm_stage import RawSpec, align_up, shm_dir, unlink_quietly
from peirce.transport.buckets import BucketPlan, checksum, unpack
from peirce.transport.frames import FrameError, encode
from peirce.transport.weight_sync import WeightPublisher, WeightSubscriber, _Arena
from peirce.transport.wire import WeightBucketHeader, WeightBucketMsg, WeightBucketRefMsg

ARENA_NAME = re.compile(r"peirce-wsync-[0-9]+-[0-9a-f]{12}\.bin")


@functools.lru_cache(maxsize=1)
def boot_id() -> str:
    """This machine's boot id: equal for two processes exactly when they share a kernel
    (and so /dev/shm). Falls back to the host name where /proc lacks it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return os.uname().nodename



def bucket_offsets(plan: BucketPlan) -> tuple[list[int], int]:
    """Each bucket's byte offset in one arena file (aligned as `shm_stage` slots, back to back), and the size."""
    offsets, end = [], 0
    for b in plan.buckets:
        end = align_up(end)
        offsets.append(end)
        end += b.nbytes
    return offsets, end


@dataclass
class ShmArena(_Arena):
    """One version's buckets in one /dev/shm file (`buffers` are views of its mapping)."""

    path: str = ""
    offsets: tuple[int, ...] = ()
    finalizer: weakref.finalize | None = None

    @classmethod
    def create(cls, plan: BucketPlan, directory: str) -> ShmArena:
        offsets, size = bucket_offsets(plan)
        path = os.path.join(directory, f"peirce-wsync-{os.getpid()}-{uuid.uuid4().hex[:12]}.bin")
        with open(path, "w+b") as fh:  # a fresh file reads as zeros: padding checksums are deterministic
            try:  # reserve the pages now: a full tmpfs then fails here, not with SIGBUS mid-pack
                os.posix_fallocate(fh.fileno(), 0, max(size, 1))
            except OSError as e:
                fh.close()
                unlink_quietly(path)
                raise OSError(e.errno, f"weight arena {path}: cannot reserve {size / 2**20:.0f} MiB in {directory} "
                                       f"({e.strerror}); enlarge it (e.g. docker --shm-size) or use "
                                       "weight_sync.strategy zmq") from None
            mapped = mmap.mmap(fh.fileno(), max(size, 1))
        flat = np.frombuffer(mapped, dtype=np.uint8)
        buffers = [flat[o:o + b.nbytes] for o, b in zip(offsets, plan.buckets)]
        arena = cls(buffers=buffers, path=path, offsets=tuple(offsets))
        arena.finalizer = weakref.finalize(arena, unlink_quietly, path)  # never leave 100s of MB behind
        return arena


class ShmWeightPublisher(WeightPublisher):
    """The learner side: packs into shared-memory arenas, sends headers and file references.

    Arenas: two, used in turn; the one holding the latest version is never repacked (late
    joiners and lagging readers read it). Closing removes the files."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*", *, directory: str | None = None, **kwargs) -> None:
        self.directory = directory or shm_dir()
        self._latest_arena: ShmArena | None = None
        super().__init__(endpoint, **kwargs)

    def _arena(self) -> tuple[_Arena, bool]:
        for arena in self._arenas:
            if arena is not self._latest_arena:
                self._latest_arena = arena
                return arena, True
        arena = ShmArena.create(self._plan, self.directory)
        self._arenas.append(arena)
        self._latest_arena = arena
        return arena, False

    def _bucket_frames(self, arena: _Arena, index: int, header: WeightBucketHeader, buf: np.ndarray) -> list:
        assert isinstance(arena, ShmArena)
        return encode(WeightBucketRefMsg(header=header, path=arena.path, offset=arena.offsets[index],
                                         boot_id=boot_id()))

    def close(self) -> None:
        super().close()
        for arena in self._arenas:
            if isinstance(arena, ShmArena) and arena.finalizer is not None:
                arena.finalizer()
        self._arenas = []


@dataclass
class SharedVersion:
    """One received version that stays in the learner's file: where each tensor lies, and
    the bucket checksums to tell afterwards whether the bytes were still that version."""

    version: int
    path: str
    table: list[RawSpec]  # (name, dtype, shape, absolute byte offset in `path`)
    buckets: list[tuple[WeightBucketHeader, np.ndarray]]  # headers and views of the file

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) views of the learner's file, for a load that copies them."""
        with warnings.catch_warnings():  # read-only mapping: nothing here writes to it
            warnings.simplefilter("ignore", UserWarning)
            yield from itertools.chain.from_iterable(unpack(h, buf, check=False) for h, buf in self.buckets)

    def intact(self) -> bool:
        """True while every bucket still has the checksum it arrived with."""
        return all(checksum(buf, h.checksum_algo) == h.checksum for h, buf in self.buckets)


class ShmWeightSubscriber(WeightSubscriber):
    """The engine side: receives file references, maps the learner's arena, verifies every
    bucket there, and yields `(version, SharedVersion)` in place of tensors."""

    def __init__(self, endpoint: str, *, directory: str | None = None, **kwargs) -> None:
        self.directory = os.path.realpath(directory or shm_dir())
        self._maps: dict[str, mmap.mmap] = {}
        super().__init__(endpoint, **kwargs)

    def _payload(self, msg) -> tuple[WeightBucketHeader, np.ndarray]:
        if isinstance(msg, WeightBucketMsg):
            raise FrameError("type", "a bucket with its bytes on a shared-memory subscriber (the learner runs "
                                     "weight_sync.strategy zmq?)")
        if not isinstance(msg, WeightBucketRefMsg):
            raise FrameError("type", f"expected WeightBucketRefMsg or REJOIN, got {type(msg).__name__}")
        if msg.boot_id != boot_id():
            raise FrameError("host", f"bucket reference from another host (boot id {msg.boot_id[:8]}..., ours "
                                     f"{boot_id()[:8]}...): shared memory works on one machine only; use "
                                     "weight_sync.strategy zmq across nodes")
        path = msg.path
        if os.path.dirname(path) != self.directory or not ARENA_NAME.fullmatch(os.path.basename(path)):
            raise FrameError("path", f"bucket reference {path[:200]!r}: not a weight arena in {self.directory}")
        mapped = self._maps.get(path)
        if mapped is None:
            try:
                with open(path, "rb") as fh:
                    mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise FrameError("path", f"bucket reference {path!r}: cannot map it ({e})") from None
            self._maps[path] = mapped
        if msg.offset + msg.header.nbytes > len(mapped):
            raise FrameError("size", f"bucket {msg.header.bucket_index} ends at byte "
                                     f"{msg.offset + msg.header.nbytes} > the arena's {len(mapped)}")
        return msg.header, np.frombuffer(mapped, dtype=np.uint8, count=msg.header.nbytes, offset=msg.offset)

    def _verify(self, header: WeightBucketHeader, data: np.ndarray) -> None:
        """Nothing on arrival: the bytes did not travel, so only a repack by the learner can
        change them, and that can also happen after any check made here. The engine checks
        every checksum after its load instead (`SharedVersion.intact`), one pass, not two."""

    def _complete(self, version: int, parts: Sequence[tuple[WeightBucketHeader, np.ndarray, object]]) -> SharedVersion:
        paths = {msg.path for _, _, msg in parts}
        if len(paths) != 1:
            raise FrameError("path", f"version {version}: buckets in {len(paths)} files, expected one arena")
        (path,) = paths
        for stale in [p for p in self._maps if p != path]:  # an arena the learner replaced (new plan)
            del self._maps[stale]
        table: list[RawSpec] = [(t.name, t.dtype, list(t.shape), msg.offset + t.offset)
                                for h, _, msg in parts for t in h.tensors]
        return SharedVersion(version, path, table, [(h, buf) for h, buf, _ in parts])

    def close(self) -> None:
        super().close()
        self._maps.clear()  # views handed out keep their own reference; the mappings go with them
