"""Hostile programs that know the harness source score 0 (peirce.rewards.code's threat model).

Each program attacks what the previous in-process harness exposed (its `report`/`tag`,
the job dict with the tests, a shared stdout) *and* what the current one has (the
program-side frame writer, the pipe to the judge, the codec), and returns wrong answers
otherwise. Wrong answers are chosen so they cannot coincide with an expected value
(None, not 0: `add(-1, 1) == 0`). The honest controls at the bottom score 1 on the same
tasks, so a harness that failed everything would not pass this file.
"""

from __future__ import annotations

import pytest

from peirce.rewards.code import CodeRewardConfig, score_code
from peirce.rewards.sandbox import SandboxLimits, isolation_available
from peirce.tasks.base import Task
from peirce.tasks.domain import code_task

CONFIG = CodeRewardConfig(limits=SandboxLimits(wall_s=5, cpu_s=3))

TASKS = {
    "add": code_task("Write add(a, b).", ["assert add(2, 3) == 5", "assert add(-1, 1) == 0",
                                          "assert add(10, 20) == 30"], id="h-add", split="test"),
    "area": code_task("Write area(r) of a circle.", [
        "assert abs(area(2) - 12.566370614359172) < 1e-6",
        "assert math.isclose(area(1), 3.141592653589793)",
        "assert round(area(3), 2) == 28.27",
    ], id="h-area", split="test"),
    "even": code_task("Write is_even(n).", ["assert all(map(is_even, [2, 4, 6]))",
                                            "assert all(map(is_even, [8, 10]))"], id="h-even", split="test"),
    "inc": code_task("Write inc(x).", None, id="h-inc", split="test", entry_point="inc", test_program=(
        "def check(candidate):\n"
        "    try:\n        candidate(-1)\n    except Exception:\n        pass\n"
        "    assert candidate(1) == 2\n    assert candidate(41) == 42\n")),
    "stdin": Task(id="h-stdin", family="code", level=1, split="test", puzzle_text="Print A+B.", solution_text="",
                  puzzle={"prompt": "Print A+B.", "stdin_cases": [{"input": "1 2\n", "output": "3\n"},
                                                                  {"input": "40 2\n", "output": "42\n"}]}),
}

FORGE = "b'0 1\\n1 1\\n2 1\\n'"  # the judge's verdict lines for three passes

HOSTILE = {
    # -- reaching the harness through its module, frames and heap
    "main_module": ("add", f"""
import __main__, os
g = vars(__main__)
if "report" in g:  # the in-process harness: report(i, ok) wrote a tagged verdict line
    for i in range(10):
        g["report"](i, True)
if "send_frame" in g:  # speak for the program side on every descriptor
    for fd in range(3, 64):
        try:
            g["send_frame"](fd, {{"loaded": True}})
            for _ in range(20):
                g["send_frame"](fd, {{"v": True}})
        except OSError:
            pass
for fd in range(1, 64):
    try:
        os.write(fd, {FORGE})
    except OSError:
        pass
os._exit(0)
"""),
    "getframe": ("add", """
import os, sys
f = sys._getframe()
while f is not None:
    g, loc = f.f_globals, f.f_locals
    if "report" in g and "tag" in g:
        for i in range(10):
            g["report"](i, True)
        os._exit(0)
    if "rout" in loc and "send_frame" in g:
        g["send_frame"](loc["rout"], {"loaded": True})
        for _ in range(20):
            g["send_frame"](loc["rout"], {"v": True})
        os._exit(0)
    f = f.f_back
def add(a, b):
    return None
"""),
    "gc_objects": ("add", """
import gc, os
job = next((o for o in gc.get_objects() if type(o) is dict and "program" in o), None)
if job is not None and "tests" in job:  # every test becomes a no-op
    job["tests"][:] = ["pass"] * len(job["tests"])
if job is not None and "rout" in job:
    send = next(o for o in gc.get_objects() if getattr(o, "__name__", "") == "send_frame")
    send(job["rout"], {"loaded": True})
    for _ in range(20):
        send(job["rout"], {"v": True})
    os._exit(0)
def add(a, b):
    return None
"""),
    "steal_expected_values": ("add", """
import gc, re
table = {}
for o in gc.get_objects():
    for s in (o if type(o) in (list, tuple) else o.values() if type(o) is dict else ()):
        if type(s) is str:
            for a, b, want in re.findall(r"add\\((-?\\d+), (-?\\d+)\\) == (-?\\d+)", s):
                table[int(a), int(b)] = int(want)
def add(a, b):
    return table.get((a, b))
"""),
    # -- values that lie
    "eq_always_true": ("add", """
class Yes:
    __eq__ = lambda self, other: True
    __ne__ = lambda self, other: False
    __hash__ = lambda self: 0
    __bool__ = lambda self: True
def add(a, b):
    return Yes()
"""),
    "lying_dunders": ("add", """
class Five:
    __repr__ = __str__ = lambda self: "5"
    __reduce__ = lambda self: (int, (5,))
    __eq__ = lambda self, other: True
    __hash__ = lambda self: hash(5)
    __bool__ = lambda self: True
    __index__ = __int__ = lambda self: 5
    __len__ = lambda self: 1
    __iter__ = lambda self: iter([5])
def add(a, b):
    return [Five()] if a < 0 else {Five(): Five()} if a > 5 else Five()
"""),
    "int_str_subclasses": ("add", """
class I(int):
    __eq__ = lambda self, other: True
    __ne__ = lambda self, other: False
    __hash__ = int.__hash__
class S(str):
    __eq__ = lambda self, other: True
class F(float):
    __eq__ = lambda self, other: True
def add(a, b):
    return I(-7) if a == 2 else S("x") if a < 0 else F(0.5)
"""),
    "nan_and_inf": ("area", """
import math
def area(r):
    return float("nan") if r < 3 else float("inf")
"""),
    "patched_math_module": ("area", """
import math
math.isclose = lambda *a, **k: True
def area(r):
    return float("nan")
"""),
    "stop_iteration_ends_map": ("even", """
def is_even(n):
    raise StopIteration
"""),
    # -- leaving early, patching the interpreter
    "os_exit_early": ("add", "import os\nos._exit(0)"),
    "sys_exit_early": ("add", "import sys\nsys.exit(0)"),
    "exit_inside_call": ("inc", """
import os
def inc(x):
    if x < 0:
        os._exit(0)
    raise SystemExit(0)
"""),
    "assertion_error_replaced": ("add", """
import builtins, sys
class Ignored(BaseException):
    pass
builtins.AssertionError = Ignored
builtins.Exception = Ignored
sys.excepthook = lambda *a: None
def add(a, b):
    return None
"""),
    "sys_modules_patched": ("add", """
import sys, types
fake = types.ModuleType("json")
fake.dumps = lambda *a, **k: '{"v":true}'
fake.loads = lambda *a, **k: {"loaded": True}
sys.modules["json"] = fake
vars(sys.modules["__main__"])["json"] = fake
sys.modules["builtins"] = fake
def add(a, b):
    return None
"""),
    "json_pickle_codec_patched": ("add", """
import json, pickle, marshal, __main__
json.dumps = lambda *a, **k: '{"v":true}'
json.loads = lambda *a, **k: True
pickle.loads = pickle.dumps = marshal.loads = lambda *a, **k: True
for name in ("encode", "decode", "dump", "_enc"):
    if hasattr(__main__, name):
        setattr(__main__, name, lambda *a, **k: True)
def add(a, b):
    return None
"""),
    "atexit_forges": ("add", f"""
import atexit, os, sys
def forge():
    g = vars(sys.modules["__main__"])
    for i in range(10):
        if "report" in g:
            g["report"](i, True)
    for fd in range(1, 64):
        try:
            os.write(fd, {FORGE})
        except OSError:
            pass
atexit.register(forge)
def add(a, b):
    return None
"""),
    # -- forged output and data
    "forged_stdout_lines": ("add", """
import json, os, secrets, sys
for _ in range(200):
    print(secrets.token_hex(16), 0, 1)
for i in range(3):
    print(f"\\nPASS {i} 1\\n{i} 1")
print(json.dumps({"passed": 3, "total": 3, "v": True, "loaded": True}))
sys.stdout.flush()
os.write(1, b"0 1\\n1 1\\n2 1\\n")
def add(a, b):
    return None
"""),
    "forged_frames_on_every_fd": ("add", """
import json, os
def frame(obj):
    data = json.dumps(obj).encode()
    return len(data).to_bytes(4, "big") + data
forged = frame({"loaded": True}) + b"".join(frame({"v": True}) for _ in range(30))
for fd in range(3, 64):
    try:
        os.write(fd, forged)
    except OSError:
        pass
os._exit(0)
"""),
    "forged_malformed_frames": ("add", """
import json, os
def frame(obj):
    data = json.dumps(obj).encode()
    return len(data).to_bytes(4, "big") + data
bad = [{"loaded": True}, {"v": {"G": "add"}}, {"v": {"M": ["os", 0]}}, {"v": {"T": [1], "x": 2}},
       {"v": {"__class__": "int"}}, {"e": ["AssertionError", 5, True]}, {"v": True, "e": 1}]
data = b"".join(frame(x) for x in bad) + b"\\x00\\x00\\x10\\x00" + b"[" * 4096
for fd in range(3, 64):
    try:
        os.write(fd, data)
    except OSError:
        pass
def add(a, b):
    return None
"""),
    "forged_oversized_frame": ("add", """
import os
for fd in range(3, 64):
    try:
        os.write(fd, b"\\x7f\\xff\\xff\\xff" + b"{" * 1000)
    except OSError:
        pass
os._exit(0)
"""),
    "huge_outputs": ("add", """
import sys
sys.stdout.write("0 1\\n" * (2 << 20))
sys.stderr.write("x" * (4 << 20))
def add(a, b):
    print("1 1\\n" * 100000)
    return "y" * (20 << 20)
"""),
    # -- the operating system
    "proc_mem_and_parent_fds": ("add", f"""
import os
try:
    with open("/proc/self/mem", "r+b") as fh:
        fh.write(b"x")
except (OSError, ValueError):
    pass
pids = ["self", str(os.getppid())]
try:
    pids += [p for p in os.listdir("/proc") if p.isdigit()]
except OSError:
    pass
for pid in pids:
    for what in ("environ", "cmdline", "mem"):
        try:
            open(f"/proc/{{pid}}/{{what}}", "rb").read(4096)
        except (OSError, ValueError):
            pass
    try:
        fds = os.listdir(f"/proc/{{pid}}/fd")
    except OSError:
        continue
    for name in fds:  # a pipe opened through /proc may be written whichever end it was
        try:
            fd = os.open(f"/proc/{{pid}}/fd/{{name}}", os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, {FORGE})
        except OSError:
            pass
def add(a, b):
    return None
"""),
    "stdin_forges": ("stdin", f"""
import os
print("0 1\\n1 1\\n2 1\\nPASS 0 1")
for fd in range(2, 64):
    try:
        os.write(fd, {FORGE})
    except OSError:
        pass
print(7)
"""),
}


@pytest.mark.parametrize(("task_key", "program"), list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_program_scores_zero(task_key, program):
    r = score_code(TASKS[task_key], f"```python\n{program}\n```", CONFIG)
    assert (r.reward, r.correct) == (0.0, False)


def test_signalling_everything_reaches_only_its_own_processes():
    if "uid" not in isolation_available():
        pytest.skip("kill(-1) without a uid of its own would reach this user's processes")
    program = ("import os, signal\nfor pid in set(range(2, 1 << 16)) - {os.getpid()}:\n    try:\n"
               "        os.kill(pid, signal.SIGSTOP)\n    except OSError:\n        pass\nos.kill(-1, signal.SIGKILL)\n"
               "def add(a, b):\n    return None")
    assert score_code(TASKS["add"], f"```python\n{program}\n```", CONFIG).reward == 0.0
    honest = "```python\ndef add(a, b):\n    return a + b\n```"
    assert score_code(TASKS["add"], honest, CONFIG).reward == 1.0  # the host is unaffected


HONEST = {
    "add": "def add(a, b):\n    return a + b",
    "area": "import math\ndef area(r):\n    return math.pi * r * r",
    "even": "def is_even(n):\n    return n % 2 == 0",
    "inc": "def inc(x):\n    if x < 0:\n        raise ValueError(x)\n    return x + 1",
    "stdin": "a, b = map(int, input().split())\nprint(a + b)",
}


@pytest.mark.parametrize("task_key", list(HONEST))
def test_honest_control_scores_one(task_key):
    r = score_code(TASKS[task_key], f"```python\n{HONEST[task_key]}\n```", CONFIG)
    assert (r.reward, r.correct) == (1.0, True)
