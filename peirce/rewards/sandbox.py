"""Run untrusted Python (model-written code) in a contained child process.

Why layers rather than one mechanism: no single OS feature contains everything a
hostile program can do, and each may be unavailable (containers, non-root users).
Each run applies what the machine allows and reports it in `SandboxResult.isolation`:

- "rlimits" (always): RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE,
  RLIMIT_NOFILE, RLIMIT_CORE=0, set in the child before it execs.
- "net": a fresh, empty network namespace (`unshare(CLONE_NEWNET)`; needs root):
  no interface is up, not even loopback, so every connect fails.
- "fs": a fresh mount namespace and `chroot` into a size-capped tmpfs that holds only
  read-only binds of /usr, the interpreter's prefix and /dev/{null,zero,urandom,random},
  plus a writable /work and /tmp. /etc, /root, /home, the repository and other
  temporary directories do not exist inside; written files vanish with the namespace.
- "uid": the child drops to a uid of its own (one per concurrent run, from a locked
  slot) with no groups, so RLIMIT_NPROC counts only that run's processes (it never binds
  root), files outside are reachable only by "other" permissions, and every straggler
  (even one that left the process group) is killed afterwards by a sweep that runs as
  that uid and signals everything it owns.

Always: empty environment, `python -I -S` (no site-packages, no user paths), a
wall-clock limit enforced by killing the process group, and stdout/stderr captured up
to a cap (the rest is drained and discarded). `pass_fds` hands extra pipe ends to the
child under the same numbers; the caller's copies are closed as soon as the child has
started, so the child holds the only ones (a pipe to it reads EOF once it exits, which
is how the code reward's judge and program processes see each other end). As root, a run that cannot drop
privileges is refused rather than run with RLIMIT_NPROC unenforced; as a normal user,
RLIMIT_NPROC counts all that user's processes, so the program effectively cannot fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import random
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 32, 4096, 16384, 1 << 18

UID_BASE = 3_000_000  # sandbox uids: UID_BASE + slot; chosen far above any real account
UID_SLOTS = 4096
EXIT_GRACE_S = 0.2  # output still read after the main process exits
_DEV_NODES = ("null", "zero", "urandom", "random")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (not: the program failed)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. Sizes in bytes, times in seconds."""

    wall_s: float = 10.0
    cpu_s: int = 5
    memory_bytes: int = 512 << 20  # RLIMIT_AS: address space, so leave room for the interpreter (~30 MiB)
    nproc: int = 16  # processes + threads of the sandbox uid
    fsize_bytes: int = 8 << 20  # largest file the program may write
    nofile: int = 64
    output_bytes: int = 64 << 10  # kept per stream
    work_bytes: int = 32 << 20  # size of the tmpfs root (fs isolation): all files together
    isolate_net: bool = True
    isolate_fs: bool = True
    drop_privileges: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ValueError(f"SandboxLimits.{f.name} must be a bool, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"SandboxLimits.{f.name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class SandboxResult:
    returncode: int | None  # None: killed at the wall-clock limit; negative: killed by that signal
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    timed_out: bool
    wall_s: float
    isolation: frozenset[str]  # subset of {"rlimits", "net", "fs", "uid"} actually applied


_fs_broken = False  # set once fs isolation failed on this machine; later runs skip it
_fs_lock = threading.Lock()


def python_executable() -> str:
    """The real interpreter (not a venv shim: with -I -S the venv adds nothing)."""
    return os.path.realpath(sys.executable)


def run_python(code: str, stdin: bytes = b"", limits: SandboxLimits = SandboxLimits(),
               pass_fds: tuple[int, ...] = ()) -> SandboxResult:
    """Run `python -I -S -c code` contained; `stdin` is fed to it and then closed.

    `pass_fds` are open descriptors (pipe ends) the child gets under the same numbers;
    they are closed here once it has started, or when it could not be started."""
    global _fs_broken
    handover = _Handover(pass_fds)
    try:
        if not isinstance(code, str):
            raise TypeError(f"code must be str, got {type(code).__name__}")
        with _uid_slot(limits.drop_privileges and os.geteuid() == 0) as uid:
            use_fs = limits.isolate_fs and os.geteuid() == 0 and not _fs_broken
            try:
                return _run(code, stdin, limits, uid, use_fs, handover)
            except _FsSetupFailed:
                with _fs_lock:
                    _fs_broken = True
                return _run(code, stdin, limits, uid, False, handover)
    finally:
        handover.close()


class _Handover:
    """Descriptors given to a child: closed in this process exactly once."""

    def __init__(self, fds: tuple[int, ...]):
        if not all(isinstance(fd, int) and not isinstance(fd, bool) and fd > 2 for fd in fds):
            raise ValueError(f"pass_fds must be descriptor numbers above 2, got {fds!r}")
        self.fds = tuple(fds)
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            for fd in self.fds:
                with contextlib.suppress(OSError):
                    os.close(fd)


class _FsSetupFailed(SandboxError):
    pass


@contextlib.contextmanager
def _uid_slot(wanted: bool):
    """A uid no other concurrent run uses (file lock per slot, across processes)."""
    if not wanted:
        yield None
        return
    lock_dir = os.path.join(tempfile.gettempdir(), "peirce-sandbox-slots")
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    start = random.randrange(UID_SLOTS)
    for k in range(UID_SLOTS):
        slot = (start + k) % UID_SLOTS
        fd = os.open(os.path.join(lock_dir, str(slot)), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield UID_BASE + slot
        finally:
            os.close(fd)
        return
    raise SandboxError(f"all {UID_SLOTS} sandbox uid slots are in use")


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _bind_ro(src: str, dst: str) -> None:
    _check(_LIBC.mount(src.encode(), dst.encode(), None, MS_BIND | MS_REC, None), f"bind {src}")
    _check(_LIBC.mount(None, dst.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID, None), f"ro {dst}")


def _fs_plan() -> tuple[list[str], list[tuple[str, str]]]:
    """(directories to bind read-only, (symlink, target) pairs) for the chroot."""
    binds, links = ["/usr"], []
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            links.append((top, os.readlink(top)))
        elif os.path.isdir(top):
            binds.append(top)
    prefix = os.path.realpath(sys.base_prefix)
    if not any(prefix == b or prefix.startswith(b + "/") for b in binds):
        binds.append(prefix)
    return binds, links


def _enter_fs(root: str, limits: SandboxLimits, uid: int | None) -> None:
    """In the child: private mount namespace, tmpfs root with read-only system binds, chroot."""
    binds, links = _fs_plan()
    _check(_LIBC.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_LIBC.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    opts = f"size={int(limits.work_bytes)},mode=0755".encode()
    _check(_LIBC.mount(b"tmpfs", root.encode(), b"tmpfs", MS_NOSUID, opts), "mount tmpfs root")
    for src in binds:
        dst = root + src
        os.makedirs(dst, exist_ok=True)
        _bind_ro(src, dst)
    for link, target in links:
        os.symlink(target, root + link)
    os.mkdir(root + "/dev", 0o755)
    for name in _DEV_NODES:
        dst = f"{root}/dev/{name}"
        open(dst, "w").close()
        _check(_LIBC.mount(f"/dev/{name}".encode(), dst.encode(), None, MS_BIND, None), f"bind /dev/{name}")
    os.mkdir(root + "/work", 0o700)
    os.mkdir(root + "/tmp", 0o1777)
    os.chmod(root + "/tmp", 0o1777)
    if uid is not None:
        os.chown(root + "/work", uid, uid)
    os.chroot(root)
    os.chdir("/work")


def _preexec(limits: SandboxLimits, uid: int | None, fs_root: str | None, workdir: str | None, report_fd: int):
    """Runs in the forked child before exec. Failures of optional layers are skipped and
    simply not reported; a failed fs setup raises so the parent retries without it."""

    def setup() -> None:
        applied = []
        if limits.isolate_net and _LIBC.unshare(CLONE_NEWNET) == 0:
            applied.append("net")
        if fs_root is not None:
            _enter_fs(fs_root, limits, uid)
            applied.append("fs")
        elif workdir is not None:
            os.chdir(workdir)
        cpu = int(limits.cpu_s)
        for res, value in (
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_AS, (int(limits.memory_bytes),) * 2),
            (resource.RLIMIT_NPROC, (int(limits.nproc),) * 2),
            (resource.RLIMIT_FSIZE, (int(limits.fsize_bytes),) * 2),
            (resource.RLIMIT_NOFILE, (int(limits.nofile),) * 2),
            (resource.RLIMIT_CORE, (0, 0)),
        ):
            resource.setrlimit(res, value)
        applied.append("rlimits")
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            applied.append("uid")
        os.write(report_fd, ",".join(applied).encode())
        os.close(report_fd)

    return setup


def _sweep_uid(uid: int) -> None:
    """Kill every process owned by `uid` (stragglers that left the process group)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _world_reachable(path: str) -> bool:
    """Can a uid with no groups execute `path` (o+x on it and every parent)?"""
    path = os.path.realpath(path)
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _run(code: str, stdin: bytes, limits: SandboxLimits, uid: int | None, use_fs: bool,
         handover: _Handover) -> SandboxResult:
    exe = python_executable()
    if os.geteuid() == 0 and limits.drop_privileges and not use_fs and not _world_reachable(exe):
        raise SandboxError(
            f"cannot drop privileges: interpreter {exe!r} is not reachable by other users and fs "
            "isolation is unavailable; set SandboxLimits(drop_privileges=False) to run as root anyway "
            "(RLIMIT_NPROC then does not bind)"
        )
    tmp = tempfile.mkdtemp(prefix="peirce-sbx-")
    try:
        if uid is not None and not use_fs:
            os.chown(tmp, uid, uid)
        return _spawn(exe, code, stdin, limits, uid, fs_root=tmp if use_fs else None, workdir=tmp,
                      handover=handover)
    finally:
        if uid is not None:
            _sweep_uid(uid)
        shutil.rmtree(tmp, ignore_errors=True)


_spawn_lock = threading.Lock()  # one fork at a time: a concurrent child cannot hold another's setup pipe


def _spawn(exe, code, stdin, limits, uid, fs_root, workdir, handover) -> SandboxResult:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/work" if fs_root else workdir, "LANG": "C.UTF-8"}
    t0 = time.monotonic()
    with _spawn_lock:
        report_r, report_w = os.pipe()
        try:
            proc = subprocess.Popen(
                [exe, "-I", "-S", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, close_fds=True, start_new_session=True, pass_fds=handover.fds,
                preexec_fn=_preexec(limits, uid, fs_root, workdir, report_w),
            )
        except subprocess.SubprocessError as exc:
            os.close(report_r)
            if fs_root is not None:
                raise _FsSetupFailed(str(exc)) from exc
            raise SandboxError(f"sandbox child setup failed: {exc}") from exc
        finally:
            os.close(report_w)
        handover.close()
        with os.fdopen(report_r, "rb") as fh:
            applied = frozenset(x for x in fh.read().decode().split(",") if x)
    if os.geteuid() == 0 and limits.drop_privileges and "uid" not in applied:  # never run root unbounded
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise SandboxError("sandbox child did not drop privileges; refusing to run it as root")
    threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
    out, err, timed_out = _collect(proc, t0 + limits.wall_s, limits.output_bytes)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the leader exited; kill what it left in its group
    returncode = None if timed_out else proc.returncode
    return SandboxResult(returncode, bytes(out[0]), bytes(err[0]), out[1], err[1], timed_out,
                         time.monotonic() - t0, applied)


def _feed(pipe, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(data)
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.close()


def _collect(proc: subprocess.Popen, deadline: float, cap: int):
    """Read both streams until EOF or the deadline; keep `cap` bytes each."""
    bufs = {proc.stdout: [bytearray(), False], proc.stderr: [bytearray(), False]}
    sel = selectors.DefaultSelector()
    for f in bufs:
        sel.register(f, selectors.EVENT_READ)
    timed_out = False
    while sel.get_map():
        now = time.monotonic()
        if proc.poll() is not None and deadline > now + EXIT_GRACE_S:
            deadline = now + EXIT_GRACE_S  # the leader is gone; a child may hold the pipes open
        left = deadline - now
        if left <= 0:
            timed_out = proc.poll() is None
            break
        for key, _ in sel.select(min(left, 0.1)):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            buf = bufs[key.fileobj]
            room = cap - len(buf[0])
            buf[0] += chunk[: max(room, 0)]
            buf[1] = buf[1] or len(chunk) > room
    sel.close()
    if not timed_out:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:  # closed its pipes but kept running
            timed_out = True
    if timed_out:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for f in bufs:
        f.close()
    return bufs[proc.stdout], bufs[proc.stderr], timed_out


def isolation_available(limits: SandboxLimits = SandboxLimits()) -> frozenset[str]:
    """What a run with `limits` gets on this machine (runs a trivial program)."""
    return run_python("pass", limits=limits).isolation


__all__ = ["SandboxError", "SandboxLimits", "SandboxResult", "isolation_available", "python_executable", "run_python"]
