"""What every shared-memory file of weights has in common: where such files live, their
64-byte slot alignment, the table a vLLM worker reads them by, quiet removal, and the lock
that says their creator is alive (so files of crashed processes can be swept).

Here, below both of its users (the engine's staging file, `peirce.rollout.shm_stage`, and
the learner's weight arenas, `peirce.transport.shm_sync`), so transport needs nothing
from rollout.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import tempfile
import time
import uuid

log = logging.getLogger(__name__)

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


def close_and_unlink(fd: int, path: str) -> None:
    """Close `fd` (if open: >= 0; dropping its liveness lock) and remove `path` if it is there."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    unlink_quietly(path)


# -- liveness: which files' creators are gone -------------------------------------------------
#
# Why: a process killed by a signal or the OOM killer runs no finalizer, so its weight files
# (hundreds of MB each, in RAM) outlive it; one machine here had gathered 3.7 GB of them. The
# creator holds a shared lock on its file for the file's whole life; the kernel drops it when
# the creator dies, so a file nobody holds that lock on is an orphan. The lock is an open file
# description lock (Linux `F_OFD_SETLK`): `flock` cannot be it (the arena protocol's own
# exclusive flock is a conversion of the same lock, and a failed conversion drops the shared
# one) and POSIX record locks vanish when any descriptor of the file closes in the process (an
# in-process reader does that). Not by pid: another pid namespace sharing /dev/shm would lose
# live files. Files are created under a temporary name and linked to their own once locked, so
# a sweep never sees a named file before its lock.

OWNED_NAME = re.compile(r"peirce-(?:wsync|weights)-[0-9]+-[0-9a-f]+\.bin")
_NEW_NAME = re.compile(r"\.peirce-new-[0-9a-f]{32}")
NEW_FILE_GRACE_S = 60.0  # a temporary file unlocked this long is a creator that died mid-create
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on 64-bit Linux: type, whence, start, len, pid (0 for OFD)
_OFD = hasattr(fcntl, "F_OFD_SETLK") and os.uname().sysname == "Linux"


def _ofd(fd: int, cmd: int, kind: int) -> int:
    """One OFD lock call over the whole file; returns the lock type the kernel wrote back."""
    out = fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, 0, 0, 0))
    return _FLOCK.unpack(out)[0]


def create_owned(path: str, mode: int = 0o600) -> int:
    """Create `path` (which must not exist) read-write, holding its liveness lock on the
    returned descriptor until that descriptor is closed (or the process dies)."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".peirce-new-{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, mode)
    try:
        if _OFD:
            _ofd(fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK)
        os.link(tmp, path)  # unlike rename, never replaces an existing file
    except BaseException:
        os.close(fd)
        raise
    finally:
        unlink_quietly(tmp)
    return fd


def owner_alive(path: str) -> bool:
    """Whether some open descriptor still holds `path`'s liveness lock. True where that cannot
    be told (no OFD locks on this platform, or the file is not ours to open)."""
    if not _OFD:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        return _ofd(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK) != fcntl.F_UNLCK
    finally:
        os.close(fd)


def sweep_orphans(directory: str) -> list[str]:
    """Remove the weight files in `directory` whose creator is gone (named as `OWNED_NAME`, or
    temporary ones older than `NEW_FILE_GRACE_S`); returns their paths. Others' files, and any
    file that cannot be examined, are left alone."""
    if not _OFD:
        return []
    removed, freed = [], 0
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        path = os.path.join(directory, name)
        new = _NEW_NAME.fullmatch(name)
        if not (new or OWNED_NAME.fullmatch(name)):
            continue
        try:
            st = os.stat(path)
            if st.st_uid != os.getuid() or (new and time.time() - st.st_mtime < NEW_FILE_GRACE_S):
                continue
        except OSError:
            continue
        if owner_alive(path):
            continue
        unlink_quietly(path)
        removed.append(path)
        freed += st.st_blocks * 512
    if removed:
        log.warning("removed %d weight file(s) of processes that died without cleaning up (%.0f MiB of shared "
                    "memory) from %s", len(removed), freed / 2**20, directory)
    return removed
