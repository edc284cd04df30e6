"""Weight files of processes that died without cleaning up are swept; live ones never are.

Real processes, real signals, real kernel locks: a child creates files the way a learner's
arena and an engine's staging file do, and is killed with SIGKILL (no finalizer runs, as with
the OOM killer or a Ray actor kill).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest
import torch

from peirce.transport import shm_files
from peirce.transport.shm_files import create_owned, owner_alive, sweep_orphans

pytestmark = pytest.mark.skipif(not shm_files._OFD, reason="open file description locks are Linux-only")


def _hold_files(directory: str, ready, kinds: tuple[str, ...]) -> None:
    """Child: create weight files like a learner (arena) and an engine (staging file), say
    where, then sleep until killed."""
    from peirce.rollout.shm_stage import ShmStage
    from peirce.transport.buckets import BucketPlan
    from peirce.transport.shm_sync import ShmArena

    paths, keep = [], []
    if "arena" in kinds:
        arena = ShmArena.create(BucketPlan.from_tensors([("w", (256,), "float32")], bucket_bytes=4096), directory)
        keep.append(arena)
        paths.append(arena.path)
    if "stage" in kinds:
        stage = ShmStage(directory)
        stage.write([("w", torch.ones(16))], torch.float32)
        keep.append(stage)
        paths.append(stage.path)
    ready.put(paths)
    time.sleep(600)


def _child(directory, kinds=("arena", "stage")):
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=_hold_files, args=(str(directory), ready, kinds), daemon=True)
    proc.start()
    return proc, ready.get(timeout=120)


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)


def test_files_of_a_killed_process_are_swept_and_a_live_ones_are_not(tmp_path):
    live, live_paths = _child(tmp_path)
    dead, dead_paths = _child(tmp_path)
    try:
        assert all(os.path.exists(p) for p in live_paths + dead_paths) and len(set(live_paths + dead_paths)) == 4
        assert sweep_orphans(str(tmp_path)) == []  # both alive: nothing goes
        _kill(dead)
        assert sorted(sweep_orphans(str(tmp_path))) == sorted(dead_paths)
        assert not any(os.path.exists(p) for p in dead_paths)
        assert all(os.path.exists(p) and owner_alive(p) for p in live_paths)
    finally:
        _kill(live)
        dead.join(1)


def test_creating_an_arena_or_a_staging_file_sweeps_the_dead_ones_first(tmp_path):
    from peirce.rollout.shm_stage import ShmStage
    from peirce.transport.buckets import BucketPlan
    from peirce.transport.shm_sync import ShmArena

    dead, paths = _child(tmp_path, ("arena",))
    _kill(dead)
    arena = ShmArena.create(BucketPlan.from_tensors([("w", (8,), "float32")], bucket_bytes=4096), str(tmp_path))
    assert not os.path.exists(paths[0]) and os.path.exists(arena.path)
    dead, paths = _child(tmp_path, ("stage",))
    _kill(dead)
    stage = ShmStage(str(tmp_path))
    stage.write([("w", torch.ones(4))], torch.float32)
    assert not os.path.exists(paths[0])
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (arena.path, stage.path))
    stage.close()
    arena.finalizer()
    assert os.listdir(tmp_path) == []


def test_a_reader_closing_its_descriptor_does_not_drop_the_creators_lock(tmp_path):
    """The reason for OFD locks: a POSIX record lock is dropped when any descriptor of the file
    closes in the process, which an in-process reader (the engine inside the learner's
    process in tests, or vLLM's worker) does after every load."""
    path = str(tmp_path / "peirce-wsync-1-0123456789ab.bin")
    fd = create_owned(path)
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        assert owner_alive(path) and sweep_orphans(str(tmp_path)) == []
    finally:
        os.close(fd)
    assert not owner_alive(path)  # the creator's descriptor closed: an orphan
    assert sweep_orphans(str(tmp_path)) == [path]


def test_the_arena_protocols_flock_does_not_disturb_the_liveness_lock(tmp_path):
    """flock (packing, loading) and OFD record locks are separate kernel locks on Linux: the
    learner's exclusive flock while packing and its release leave the file owned."""
    from peirce.transport.buckets import BucketPlan
    from peirce.transport.shm_sync import ShmArena

    arena = ShmArena.create(BucketPlan.from_tensors([("w", (8,), "float32")], bucket_bytes=4096), str(tmp_path))
    for _ in range(2):
        assert arena.try_lock()
        assert owner_alive(arena.path)
        arena.unlock()
        assert owner_alive(arena.path)
    assert sweep_orphans(str(tmp_path)) == []
    arena.finalizer()


def test_only_our_weight_files_are_ever_swept(tmp_path):
    """Other names (even close ones), and a file mid-create younger than the grace period, stay."""
    names = ["peirce-wsync-1-abc.txt", "psm_0123", "peirce-checkpoint.json", "xpeirce-wsync-1-ab.bin",
             ".peirce-new-" + "0" * 32]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert sweep_orphans(str(tmp_path)) == []
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    stale = tmp_path / (".peirce-new-" + "1" * 32)  # a creator that died between create and rename
    stale.write_bytes(b"x")
    old = time.time() - shm_files.NEW_FILE_GRACE_S - 5
    os.utime(stale, (old, old))
    assert sweep_orphans(str(tmp_path)) == [str(stale)]


def test_create_owned_refuses_an_existing_name_and_leaves_nothing_behind(tmp_path):
    path = str(tmp_path / "peirce-weights-1-0badf00d.bin")
    fd = create_owned(path)
    os.close(fd)
    before = sorted(os.listdir(tmp_path))  # a rename would have replaced the file silently; the link refuses
    with pytest.raises(FileExistsError):
        create_owned(path)
    assert sorted(os.listdir(tmp_path)) == before
