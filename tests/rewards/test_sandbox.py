"""Hostile programs stay contained and the host is unaffected.

Isolation layers depend on the machine; tests of a layer skip (saying why) where it is
unavailable, and the rlimit/wall-clock tests run everywhere.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from peirce.rewards.sandbox import UID_BASE, SandboxLimits, isolation_available, run_python

FAST = SandboxLimits(wall_s=5.0, cpu_s=2)


@pytest.fixture(scope="module")
def isolation() -> frozenset[str]:
    return isolation_available()


def _need(isolation: frozenset[str], layer: str) -> None:
    if layer not in isolation:
        pytest.skip(f"isolation layer {layer!r} is not available here (have {sorted(isolation)})")


def _sandbox_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "uid=,stat=,pid="], capture_output=True, text=True).stdout.split("\n")
    return [line for line in out if line.split() and int(line.split()[0]) >= UID_BASE and "Z" not in line.split()[1]]


def test_runs_and_captures_output():
    res = run_python("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)", limits=FAST)
    assert (res.returncode, res.stdout, res.stderr, res.timed_out) == (3, b"out\n", b"err\n", False)
    assert "rlimits" in res.isolation


def test_stdin_is_fed_and_environment_is_empty():
    res = run_python("import os, sys; print(len(sys.stdin.read())); print(sorted(os.environ))",
                     stdin=b"x" * 200_000, limits=FAST)
    assert res.stdout.splitlines()[0] == b"200000"
    assert b"PEIRCE" not in res.stdout and b"HF_HUB" not in res.stdout


def test_no_site_packages():
    res = run_python("import msgspec", limits=FAST)
    assert res.returncode == 1 and b"ModuleNotFoundError" in res.stderr


def test_infinite_loop_is_killed_by_cpu_limit():
    t0 = time.monotonic()
    res = run_python("while True: pass", limits=SandboxLimits(wall_s=20, cpu_s=1))
    assert res.returncode is not None and res.returncode < 0  # SIGXCPU / SIGKILL from RLIMIT_CPU
    assert time.monotonic() - t0 < 20


def test_sleeper_is_killed_at_wall_clock():
    res = run_python("import time; time.sleep(60)", limits=SandboxLimits(wall_s=1.0))
    assert res.timed_out and res.returncode is None and res.wall_s < 10


def test_memory_hog_hits_address_space_limit():
    res = run_python("x = bytearray(1 << 30); print('allocated')", limits=SandboxLimits(memory_bytes=128 << 20))
    assert res.returncode != 0 and b"MemoryError" in res.stderr and b"allocated" not in res.stdout


def test_huge_file_write_hits_fsize_limit():
    code = "f = open('big', 'wb')\nfor _ in range(64): f.write(b'x' * (1 << 20))\nf.flush()\nprint('wrote')"
    res = run_python(code, limits=SandboxLimits(fsize_bytes=1 << 20, wall_s=5))
    assert res.returncode != 0 and b"wrote" not in res.stdout
    assert b"File too large" in res.stderr or res.returncode == -25  # SIGXFSZ when not ignored


def test_output_is_capped():
    res = run_python("print('y' * 5_000_000)", limits=SandboxLimits(output_bytes=1000))
    assert len(res.stdout) == 1000 and res.stdout_truncated and res.returncode == 0


def test_fork_bomb_is_contained(isolation):
    _need(isolation, "uid")  # RLIMIT_NPROC binds only a non-root uid of its own
    bomb = (
        "import os\nfails = 0\n"
        "while fails < 50:\n"
        "    try:\n        os.fork()\n    except OSError:\n        fails += 1\n"
        "import time\ntime.sleep(60)\n"
    )
    res = run_python(bomb, limits=SandboxLimits(nproc=8, wall_s=2, cpu_s=2))
    assert res.timed_out
    assert _sandbox_processes() == []  # every straggler was swept
    assert run_python("print(1)", limits=FAST).stdout == b"1\n"  # host still spawns


def test_escaped_session_is_swept(isolation):
    _need(isolation, "uid")
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')"
    res = run_python(code, limits=FAST)
    assert res.stdout == b"parent done\n" and res.returncode == 0
    assert not res.timed_out and res.wall_s < FAST.wall_s  # not held open by the child's pipes
    assert _sandbox_processes() == []


def test_cannot_read_files_outside(isolation, tmp_path):
    _need(isolation, "uid")
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir(mode=0o700)
    secret = secret_dir / "token.txt"
    secret.write_text("s3cr3t")
    os.chmod(secret, 0o600)
    code = f"print(open({str(secret)!r}).read())"
    res = run_python(code, limits=FAST)
    assert res.returncode != 0 and b"s3cr3t" not in res.stdout
    assert b"PermissionError" in res.stderr or b"FileNotFoundError" in res.stderr


def test_system_files_are_hidden(isolation):
    _need(isolation, "fs")
    res = run_python("import os; print(os.path.exists('/etc/passwd'), os.path.exists('/work/main'))", limits=FAST)
    assert res.stdout == b"False False\n"


def test_writes_stay_inside_and_vanish(isolation, tmp_path):
    _need(isolation, "fs")
    target = tmp_path / "planted"
    res = run_python(f"open('local', 'w').write('ok'); open({str(target)!r}, 'w').write('x')", limits=FAST)
    assert res.returncode != 0 and not target.exists()


def test_network_is_unreachable(isolation):
    _need(isolation, "net")
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        res = run_python(code, limits=FAST)
        assert b"connected" not in res.stdout and b"OSError" in res.stderr
    finally:
        server.close()


def test_limits_validate():
    with pytest.raises(ValueError, match="SandboxLimits.wall_s"):
        SandboxLimits(wall_s=0)
    with pytest.raises(ValueError, match="SandboxLimits.isolate_net"):
        SandboxLimits(isolate_net="yes")


def test_isolation_follows_config():
    bare = SandboxLimits(isolate_net=False, isolate_fs=False, drop_privileges=False, wall_s=5)
    res = run_python("import os; print(os.getcwd())", limits=bare)
    assert res.isolation == frozenset({"rlimits"}) and res.returncode == 0
    assert b"peirce-sbx-" in res.stdout  # a fresh host temp dir, deleted afterwards
    assert not os.path.exists(res.stdout.decode().strip())


def test_passed_pipe_ends_belong_to_the_children():
    """Two sandboxes joined by a pipe, as the code reward's judge and program are: the
    reader sees EOF when the writer exits, so this process kept no copy of either end."""
    r, w = os.pipe()
    reader: list = []
    thread = threading.Thread(target=lambda: reader.append(run_python(
        f"import os\nn = 0\nwhile chunk := os.read({r}, 4096):\n    n += len(chunk)\nprint(n)",
        limits=FAST, pass_fds=(r,))))
    thread.start()
    writer = run_python(f"import os\nos.write({w}, b'x' * 100)", limits=FAST, pass_fds=(w,))
    thread.join()
    assert writer.returncode == 0 and reader[0].stdout == b"100\n"
    assert not reader[0].timed_out and reader[0].wall_s < FAST.wall_s / 2
    for fd in (r, w):
        with pytest.raises(OSError):
            os.fstat(fd)


def test_pass_fds_validate_and_are_closed_when_the_run_is_refused():
    with pytest.raises(ValueError, match="pass_fds"):
        run_python("pass", limits=FAST, pass_fds=(1,))
    r, w = os.pipe()
    with pytest.raises(TypeError):
        run_python(b"not str", pass_fds=(r,))  # type: ignore[arg-type]
    with pytest.raises(OSError):
        os.fstat(r)  # closed here although no child ever held it
    os.close(w)
