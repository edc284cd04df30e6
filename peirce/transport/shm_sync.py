"""Same-host weight sync through shared memory (`weight_sync.strategy: shm`).

Why: when a learner and its rollout engines share a machine (every single-node run), TCP
loopback copies each byte through the kernel twice and is the slowest part of a sync
(raw ZeroMQ: 0.215 s for SmolLM2's 257 MB on a 2-core avx512_bf16 host). Here the learner
packs each version into a file in /dev/shm (an arena), and ZeroMQ carries only the bucket
headers and where each bucket lies. The engine's vLLM worker reads the tensors straight out
of the learner's file, so the bytes cross between processes once, in the load itself: the
CPU counterpart of CUDA IPC. Handshake, versions, eviction and late joiners are the ZeroMQ
strategy's own (`WeightPublisher`, `WeightSubscriber`).

Safety, by a lock rather than by a check afterwards: the learner packs an arena holding its
exclusive `flock`, and stamps the version it packed in the arena's first bytes; an engine
loads holding a shared `flock` on it (`SharedVersion.reading`, never waiting for it) after
checking the stamp. So
a load never sees a repack: an arena some engine is loading from is not repacked (the
learner packs into another, at most `MAX_SHM_ARENAS`, waiting beyond that), and an engine
that comes to a version whose arena was already repacked (it lagged two versions) loads
nothing and is told so (`VersionSuperseded`): it keeps serving its whole older version and
takes the newer one. The kernel's lock orders the learner's writes before the engine's
reads on every architecture, which a version stamp read without a lock would not. The
bytes never travel, so they are not checksummed: that pass (~0.02 s per 257 MB here) would
prove nothing the lock does not. The arena holding the latest version is never repacked
(late joiners are sent it).

Same host only: every reference names the sender's boot id, and a subscriber on another
host (or given a path outside the shared-memory folder) rejects it with a clear reason;
use `zmq` across nodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import logging
import mmap
import os
import re
import struct
import time
import uuid
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import torch

from peirce.transport.buckets import CHECKSUM_ALGO, BucketPlan, checksum, pack, unpack
from peirce.transport.frames import FrameError, encode
from peirce.transport.shm_files import RawSpec, align_up, close_and_unlink, create_owned, shm_dir, sweep_orphans
from peirce.transport.sync_state import sid
from peirce.transport.weight_sync import WeightPublisher, WeightSubscriber, _Arena, _Job
from peirce.transport.wire import WeightBucketHeader, WeightBucketMsg, WeightBucketRefMsg

log = logging.getLogger(__name__)

ARENA_NAME = re.compile(r"peirce-wsync-[0-9]+-[0-9a-f]{12}\.bin")
MAX_SHM_ARENAS = 3  # the latest version's, the one being packed, one an engine is still loading from
STAMP = struct.Struct("<q")  # an arena's first bytes: the version its buckets hold (-1: none, or mid-pack)
STAMP_BYTES = align_up(STAMP.size)  # buckets start after it, aligned


class VersionSuperseded(RuntimeError):
    """The learner's arena no longer holds this version (two newer ones were published before
    the engine came to load it). Nothing was loaded: the engine still serves its older
    version whole; a newer one is on its way."""


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
    """Each bucket's byte offset in one arena file (after the stamp, aligned as `shm_files`
    slots, back to back), and the file's size."""
    offsets, end = [], STAMP_BYTES
    for b in plan.buckets:
        end = align_up(end)
        offsets.append(end)
        end += b.nbytes
    return offsets, end


@dataclass
class ShmArena(_Arena):
    """One version's buckets in one /dev/shm file (`buffers` are views of its mapping),
    with the descriptor its exclusive lock is taken on while it is packed."""

    path: str = ""
    offsets: tuple[int, ...] = ()
    fd: int = -1
    finalizer: weakref.finalize | None = None

    @classmethod
    def create(cls, plan: BucketPlan, directory: str) -> ShmArena:
        offsets, size = bucket_offsets(plan)
        sweep_orphans(directory)  # files of learners that died without cleaning up
        path = os.path.join(directory, f"peirce-wsync-{os.getpid()}-{uuid.uuid4().hex[:12]}.bin")
        fd = create_owned(path)  # its liveness lock lives as long as this descriptor
        try:  # reserve the pages now: a full tmpfs then fails here, not with SIGBUS mid-pack
            os.posix_fallocate(fd, 0, size)
            mapped = mmap.mmap(fd, size)
        except OSError as e:
            close_and_unlink(fd, path)
            raise OSError(e.errno, f"weight arena {path}: cannot reserve {size / 2**20:.0f} MiB in {directory} "
                                   f"({e.strerror}); enlarge it (e.g. docker --shm-size) or use "
                                   "weight_sync.strategy zmq") from None
        os.pwrite(fd, STAMP.pack(-1), 0)  # a fresh file reads as zeros: version 0 must not seem packed
        flat = np.frombuffer(mapped, dtype=np.uint8)
        buffers = [flat[o:o + b.nbytes] for o, b in zip(offsets, plan.buckets)]
        arena = cls(buffers=buffers, path=path, offsets=tuple(offsets), fd=fd)
        arena.finalizer = weakref.finalize(arena, close_and_unlink, fd, path)  # never leave 100s of MB behind
        return arena

    def try_lock(self) -> bool:
        """Take the exclusive lock unless an engine is loading from this arena."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def stamp(self, version: int) -> None:
        os.pwrite(self.fd, STAMP.pack(version), 0)

    def unlock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


class ShmWeightPublisher(WeightPublisher):
    """The learner side: packs into shared-memory arenas under their lock, sends headers and
    file references. Closing removes the files."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*", *, directory: str | None = None, **kwargs) -> None:
        self.directory = directory or shm_dir()
        self._latest_arena: ShmArena | None = None
        self.waited_for_readers_s = 0.0  # total time publishes waited for engines to finish a load
        super().__init__(endpoint, **kwargs)

    def _arena(self) -> tuple[_Arena, bool]:
        """An arena no engine is loading from, other than the latest version's, locked for
        packing; a new one while there are fewer than MAX_SHM_ARENAS, else wait (a load
        takes well under a second; an engine stuck in one for ack_timeout is an error)."""
        t0 = time.monotonic()
        while True:
            for arena in self._arenas:
                if arena is not self._latest_arena and arena.free() and arena.try_lock():
                    arena.trackers = []
                    self.waited_for_readers_s += time.monotonic() - t0
                    return arena, True
            if len(self._arenas) < MAX_SHM_ARENAS:
                arena = ShmArena.create(self._plan, self.directory)
                arena.try_lock()  # nobody knows the file yet
                self._arenas.append(arena)
                return arena, False
            if time.monotonic() - t0 > self.ack_timeout:
                raise RuntimeError(f"weight sync: rollout engines have held all {MAX_SHM_ARENAS - 1} older weight "
                                   f"arenas in {self.directory} for over {self.ack_timeout:g} s (a load stuck?); "
                                   "cannot publish without repacking one under them")
            time.sleep(0.002)

    def _pack(self, arena: _Arena, state_dict: Mapping[str, torch.Tensor],
              version: int) -> list[tuple[WeightBucketHeader, np.ndarray]]:
        assert isinstance(arena, ShmArena)
        try:  # the stamp says "none" while bytes change, so a failed pack cannot pass as a version
            arena.stamp(-1)
            buckets = pack(state_dict, self._plan, version, out=arena.buffers, cast=self.dtype is not None,
                           checksums=False)
            arena.stamp(version)
        finally:
            arena.unlock()
        self._latest_arena = arena
        return buckets

    def _bucket_frames(self, arena: _Arena, index: int, header: WeightBucketHeader, buf: np.ndarray) -> list:
        assert isinstance(arena, ShmArena)
        return encode(WeightBucketRefMsg(header=header, path=arena.path, offset=arena.offsets[index],
                                         boot_id=boot_id()))

    def _by_value(self, subscriber_id: str) -> bool:
        return False

    def _on_ready(self, ident: bytes, payload: dict) -> None:
        if payload.get("boot_id") not in (None, boot_id()):
            log.warning("weight sync: subscriber %r is on another host; with weight_sync.strategy shm it can load "
                        "nothing (use auto: bytes to other hosts, references to this one)", ident[:64])

    def close(self) -> None:
        super().close()
        for arena in self._arenas:
            if isinstance(arena, ShmArena) and arena.finalizer is not None:
                arena.finalizer()
        self._arenas = []


@dataclass
class SharedVersion:
    """One received version that stays in the learner's file: where each tensor lies. Read
    it only inside `reading()`."""

    version: int
    path: str
    table: list[RawSpec]  # (name, dtype, shape, absolute byte offset in `path`)
    buckets: list[tuple[WeightBucketHeader, np.ndarray]]  # headers and views of the file

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the arena's shared lock (the learner cannot repack it meanwhile) once its stamp
        says it still holds this version; `VersionSuperseded` when it does not."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise VersionSuperseded(f"version {self.version}: the learner's file {self.path} is gone (it closed, "
                                    "or its model's layout changed)") from None
        try:
            try:  # never wait: the learner locks an arena only to repack it, so this version is gone
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise VersionSuperseded(f"version {self.version}: the learner is repacking its file {self.path} "
                                        "with a newer version") from None
            (stamp,) = STAMP.unpack(os.pread(fd, STAMP.size, 0))
            if stamp != self.version:
                raise VersionSuperseded(f"version {self.version}: the learner's file {self.path} now holds "
                                        f"{'a version being packed' if stamp < 0 else f'version {stamp}'} "
                                        "(two newer versions were published before this one was loaded)")
            yield
        finally:
            os.close(fd)  # releases the lock

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) views of the learner's file, for a load that copies them (inside `reading()`)."""
        with warnings.catch_warnings():  # read-only mapping: nothing here writes to it
            warnings.simplefilter("ignore", UserWarning)
            yield from itertools.chain.from_iterable(unpack(h, buf, check=False) for h, buf in self.buckets)


class ShmWeightSubscriber(WeightSubscriber):
    """The engine side: receives file references, maps the learner's arena, and yields
    `(version, SharedVersion)` in place of tensors."""

    def __init__(self, endpoint: str, *, directory: str | None = None, **kwargs) -> None:
        self.directory = os.path.realpath(directory or shm_dir())
        self._maps: dict[str, mmap.mmap] = {}
        super().__init__(endpoint, **kwargs)

    def _ready_extra(self) -> dict:
        return {"boot_id": boot_id()}

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
        if msg.offset < STAMP_BYTES or msg.offset + msg.header.nbytes > len(mapped):
            raise FrameError("size", f"bucket {msg.header.bucket_index} at bytes {msg.offset}.."
                                     f"{msg.offset + msg.header.nbytes}: outside the arena's buckets "
                                     f"({STAMP_BYTES}..{len(mapped)})")
        return msg.header, np.frombuffer(mapped, dtype=np.uint8, count=msg.header.nbytes, offset=msg.offset)

    def _verify(self, header: WeightBucketHeader, data: np.ndarray, msg) -> None:
        """Nothing: the bytes did not travel (and carry no checksum); the arena's lock and
        stamp guarantee the load reads the version named here (`SharedVersion.reading`)."""

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


class AutoWeightPublisher(ShmWeightPublisher):
    """`weight_sync.strategy: auto` (the default): file references to the subscribers on this
    machine, checksummed bytes over ZeroMQ to the others, decided per subscriber by the boot
    id its READY carries. A run that scales rollout workers onto another node keeps working;
    the ones beside the learner keep the shared-memory speed. Bytes for other hosts are
    checksummed and framed once per version, when the first such subscriber is sent it."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:*", **kwargs) -> None:
        self._peer_boot: dict[str, str] = {}  # subscriber id -> the boot id its READY claimed (publisher thread)
        super().__init__(endpoint, **kwargs)

    def _on_ready(self, ident: bytes, payload: dict) -> None:
        claimed = payload.get("boot_id")
        self._peer_boot[sid(ident)] = claimed if isinstance(claimed, str) else ""

    def _by_value(self, subscriber_id: str) -> bool:
        return self._peer_boot.get(subscriber_id) != boot_id()

    def _frames_for(self, ident: bytes, job: _Job) -> list[list]:
        if not self._by_value(sid(ident)):
            return job.frames
        if job.value_frames is None:  # they live as long as the job, like its references
            job.value_frames = [WeightPublisher._bucket_frames(
                self, job.arena, i, msgspec.structs.replace(h, checksum=checksum(buf), checksum_algo=CHECKSUM_ALGO),
                buf) for i, (h, buf) in enumerate(job.buckets)]  # tracked: the arena waits for ZeroMQ
        return job.value_frames


class AutoWeightSubscriber(ShmWeightSubscriber):
    """The engine side of `auto`: takes a version by reference (yields a `SharedVersion`) or
    by value (verified tensors), whichever the publisher chose for this machine."""

    def _payload(self, msg) -> tuple[WeightBucketHeader, np.ndarray]:
        if isinstance(msg, WeightBucketMsg):
            return WeightSubscriber._payload(self, msg)
        return super()._payload(msg)

    def _verify(self, header: WeightBucketHeader, data: np.ndarray, msg) -> None:
        if isinstance(msg, WeightBucketMsg):  # bytes that travelled: their checksum, always
            WeightSubscriber._verify(self, header, data, msg)

    def _complete(self, version: int, parts: Sequence[tuple[WeightBucketHeader, np.ndarray, object]]):
        kinds = {type(msg) for _, _, msg in parts}
        if kinds == {WeightBucketMsg}:
            return WeightSubscriber._complete(self, version, parts)
        if kinds == {WeightBucketRefMsg}:
            return super()._complete(version, parts)
        raise FrameError("type", f"version {version}: some buckets by reference, some by value")
