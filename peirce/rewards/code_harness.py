"""The code reward's in-sandbox side: run as `python -I -S -c <this source> + "main(role)"`.

Standard library only, no `from __future__`, no peirce imports: the sandbox has neither
site-packages nor the repository. The reward process imports it only for the codec
(`encode`/`decode`, pure functions) and to read its source (see peirce.rewards.code).

Roles (the threat model is in peirce.rewards.code):
- "program": runs the task's setup + the model's program, then answers requests from the
  judge on two pipes: look up a global, call / get an attribute / index / iterate / len /
  bool on an object it holds. Results go back as plain data; anything else stays here and
  the judge gets an opaque handle. It never sees a test or an expected value.
- "judge": never runs model code. Runs the setup and the tests itself; a name the tests
  use that the judge lacks is looked up in the program, so `f(x) == y` compares data the
  program returned with `y` here. Verdicts go to its own stdout, one "i ok" line per test.
- "stdio": runs the program as __main__ with a test case on stdin (the reward process
  compares stdout).

Wire format: frames of a 4-byte big-endian length + JSON. Values are JSON scalars, lists,
or one-key objects tagging the other types (tuple "T", dict "D", set "S", ...); the
decoder accepts exactly these exact builtin types and raises ProtocolError on anything
else. Nothing is ever unpickled or evaluated.
"""

import builtins
import json
import os
import sys

MAX_DEPTH = 200  # nesting of one value
MAX_HEX_DIGITS = 1 << 22  # big ints travel as hex (decimal conversion is capped and quadratic)
INT_JSON_MAX = 1 << 63
MAX_MESSAGE_CHARS = 1000
# Modules the judge imports itself when a test uses a program global bound to one (MBPP's
# `math.isclose` relies on the program's `import math`): side-effect free, and the judge's
# copy is the clean one. Any other module stays a handle in the program.
LOCAL_MODULES = frozenset((
    "math", "cmath", "re", "string", "collections", "collections.abc", "itertools", "functools", "operator",
    "heapq", "bisect", "statistics", "decimal", "fractions", "numbers", "typing", "json", "copy", "datetime",
    "calendar", "random", "array", "textwrap", "unicodedata", "hashlib", "binascii", "base64", "struct",
))
_EXTRA = (  # (module, class, tag): stdlib value types that honest solutions return
    ("collections", "Counter", "Ctr"),
    ("collections", "OrderedDict", "OD"),
    ("collections", "defaultdict", "DD"),
    ("collections", "deque", "Q"),
    ("fractions", "Fraction", "Fr"),
    ("decimal", "Decimal", "Dec"),
)


class ProtocolError(Exception):
    """The peer sent something that is not a well-formed frame or plain value."""


class NotPlain(Exception):
    """A value (or a part of it) is not plain data and no handle was allowed for it."""


# ---------------------------------------------------------------- codec


def encode(value, ref=None):
    """`value` as a JSON-able tree. Only exact builtin types count as data (an int
    subclass does not); `ref(obj)` returns the tag for anything else, or NotPlain."""
    return _enc(value, ref, 0)


def _pairs(items, ref, depth):
    return [[_enc(k, ref, depth), _enc(v, ref, depth)] for k, v in items]


def _enc(v, ref, depth):
    t = type(v)
    if v is None or t is bool or t is str:
        return v
    if t is int:
        return v if -INT_JSON_MAX < v < INT_JSON_MAX else {"I": format(v, "x")}
    if t is float:
        return v
    if depth >= MAX_DEPTH:
        raise NotPlain("value nested deeper than %d" % MAX_DEPTH)
    d = depth + 1
    if t is list:
        return [_enc(x, ref, d) for x in v]
    if t is tuple:
        return {"T": [_enc(x, ref, d) for x in v]}
    if t is dict:
        return {"D": _pairs(v.items(), ref, d)}
    if t is set or t is frozenset:
        return {"S" if t is set else "F": [_enc(x, ref, d) for x in v]}
    if t is bytes or t is bytearray:
        return {"B" if t is bytes else "BA": v.hex()}
    if t is complex:
        return {"C": [v.real, v.imag]}
    if t is range:
        return {"R": [v.start, v.stop, v.step]}
    for mod, name, tag in _EXTRA:
        m = sys.modules.get(mod)
        if m is not None and t is getattr(m, name, None):
            if tag in ("Ctr", "OD", "DD"):
                return {tag: _pairs(dict.items(v), ref, d)}
            if tag == "Q":
                return {tag: [_enc(x, ref, d) for x in v]}
            if tag == "Fr":
                return {tag: [_enc(v.numerator, None, d), _enc(v.denominator, None, d)]}
            return {tag: str(v)}
    if ref is not None:
        return ref(v)
    raise NotPlain("a %s is not plain data" % t.__name__)


def decode(tree, ref=None):
    """The value a tree from `encode` stands for; `ref(tag, payload)` resolves handle tags.
    ProtocolError for anything that is not exactly that format."""
    try:
        return _dec(tree, ref, 0)
    except ProtocolError:
        raise
    except (TypeError, ValueError, KeyError, OverflowError, RecursionError, ArithmeticError) as exc:
        raise ProtocolError("bad value: %s: %s" % (type(exc).__name__, exc)) from None


def _want(p, t):
    if type(p) is not t:
        raise ProtocolError("payload must be a %s, got %s" % (t.__name__, type(p).__name__))
    return p


def _int(p):
    if type(p) is int:
        return p
    if type(p) is dict and list(p) == ["I"] and type(p["I"]) is str and len(p["I"]) <= MAX_HEX_DIGITS:
        return int(p["I"], 16)
    raise ProtocolError("expected an int")


def _dec(x, ref, depth):
    t = type(x)
    if x is None or t is bool or t is str or t is int or t is float:
        return x
    if depth >= MAX_DEPTH:
        raise ProtocolError("value nested deeper than %d" % MAX_DEPTH)
    d = depth + 1
    if t is list:
        return [_dec(v, ref, d) for v in x]
    if t is not dict or len(x) != 1:
        raise ProtocolError("expected a one-key tag object")
    ((tag, p),) = x.items()
    if tag == "I":
        return _int(x)
    if tag in ("T", "S", "F", "Q"):
        items = [_dec(v, ref, d) for v in _want(p, list)]
        if tag == "Q":
            return __import__("collections").deque(items)
        return {"T": tuple, "S": set, "F": frozenset}[tag](items)
    if tag in ("D", "Ctr", "OD", "DD"):
        pairs = []
        for kv in _want(p, list):
            if type(kv) is not list or len(kv) != 2:
                raise ProtocolError("dict items must be [key, value] pairs")
            pairs.append((_dec(kv[0], ref, d), _dec(kv[1], ref, d)))
        if tag == "D":
            return dict(pairs)
        collections = __import__("collections")
        if tag == "DD":
            out = collections.defaultdict(None)
            out.update(pairs)
            return out
        return {"Ctr": collections.Counter, "OD": collections.OrderedDict}[tag](dict(pairs))
    if tag in ("B", "BA"):
        return (bytes if tag == "B" else bytearray).fromhex(_want(p, str))
    if tag == "C":
        if type(p) is not list or len(p) != 2 or not all(type(v) in (int, float) for v in p):
            raise ProtocolError("complex payload must be [re, im]")
        return complex(p[0], p[1])
    if tag == "R":
        if type(p) is not list or len(p) != 3:
            raise ProtocolError("range payload must be [start, stop, step]")
        return range(_int(p[0]), _int(p[1]), _int(p[2]))
    if tag == "Fr":
        if type(p) is not list or len(p) != 2:
            raise ProtocolError("Fraction payload must be [numerator, denominator]")
        return __import__("fractions").Fraction(_int(p[0]), _int(p[1]))
    if tag == "Dec":
        return __import__("decimal").Decimal(_want(p, str))
    if ref is not None:
        return ref(tag, p)
    raise ProtocolError("unknown tag %r" % (tag,))


# ---------------------------------------------------------------- frames


def dump(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def send_frame(fd, obj, data=None):
    """Write `obj` (or its already dumped JSON `data`) as one frame."""
    data = dump(obj) if data is None else data
    data = len(data).to_bytes(4, "big") + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(fd, max_bytes):
    """The next frame's JSON; None at end of file; ProtocolError if malformed or too big."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    n = int.from_bytes(head, "big")
    if n > max_bytes:
        raise ProtocolError("frame of %d bytes exceeds the %d-byte limit" % (n, max_bytes))
    body = _read_exact(fd, n)
    if body is None:
        raise ProtocolError("frame cut short")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("frame is not JSON: %s" % exc) from None


def _message(exc):
    try:
        return str(exc)[:MAX_MESSAGE_CHARS]
    except BaseException:
        return "<unprintable>"


# ---------------------------------------------------------------- program role


class _Objects:
    """Objects the judge holds handles to, by small integer id (kept alive until exit)."""

    def __init__(self):
        self.by_hid, self.hid_of = [], {}

    def ref(self, obj):
        hid = self.hid_of.get(id(obj))
        if hid is None:
            hid = self.hid_of[id(obj)] = len(self.by_hid)
            self.by_hid.append(obj)
        if type(obj) is type(sys):
            return {"M": [getattr(obj, "__name__", ""), hid]}
        return {"H": hid}


def _program_request(req, ns, objects):
    if type(req) is not list or not req or type(req[0]) is not str:
        raise ProtocolError("request must be [op, ...]")

    def unref(tag, p):
        if tag == "H" and type(p) is int and 0 <= p < len(objects.by_hid):
            return objects.by_hid[p]
        if tag == "G" and type(p) is str and p in ns:
            return ns[p]
        raise ProtocolError("unknown reference %r" % ((tag, p),))

    op, args = req[0], req[1:]
    if op == "get":
        if args[0] not in ns:
            raise NameError("name %r is not defined" % (args[0],))
        return ns[args[0]]
    obj = unref("H", args[0])
    if op == "call":
        pos = decode(args[1], unref)
        kw = {k: decode(v, unref) for k, v in args[2]}
        return obj(*pos, **kw)
    if op == "attr":
        return getattr(obj, args[1])
    if op == "item":
        return obj[decode(args[1], unref)]
    if op == "iter":
        return iter(obj)
    if op == "next":
        return next(obj)
    if op == "bool":
        return bool(obj)
    if op == "len":
        return len(obj)
    raise ProtocolError("unknown op %r" % (op,))


def _error_reply(exc):
    t = type(exc)
    plain = t.__module__ == "builtins" and getattr(builtins, t.__name__, None) is t
    return {"e": [t.__name__ if plain else "", _message(exc), isinstance(exc, Exception)]}


def serve_program(job):
    rin, rout, max_bytes = job["rin"], job["rout"], job["max_frame"]
    ns = {"__name__": "solution"}  # a main block in the answer does not run
    try:
        exec(compile(job["setup"] + "\n" + job["program"], "<solution>", "exec"), ns)
        loaded = True
    except BaseException as exc:
        print("program failed:", type(exc).__name__, _message(exc), file=sys.stderr)
        loaded = False
    send_frame(rout, {"loaded": loaded})
    if not loaded:
        return
    objects = _Objects()
    while True:
        try:
            req = recv_frame(rin, max_bytes)
        except ProtocolError:
            return
        if req is None:
            return
        try:
            reply = {"v": encode(_program_request(req, ns, objects), objects.ref)}
        except BaseException as exc:
            reply = _error_reply(exc)
        data = dump(reply)
        if len(data) > max_bytes:
            data = dump({"e": ["ValueError", "value of %d bytes exceeds the %d-byte limit" % (len(data), max_bytes),
                               True]})
        send_frame(rout, None, data)


# ---------------------------------------------------------------- judge role


class ProgramGone(BaseException):
    """The program process died or broke the protocol: this and every later test fail.
    A BaseException so a test's `except Exception` cannot turn it into a pass."""


class RemoteError(Exception):
    """The program raised an exception that is not a builtin one."""


class RemoteExit(BaseException):
    """The program raised SystemExit, KeyboardInterrupt or another non-Exception."""


class _Channel:
    def __init__(self, rin, rout, max_bytes):
        self.rin, self.rout, self.max_bytes = rin, rout, max_bytes
        self.broken = False
        self.remotes = {}
        self.setup_refs = {}

    def hello(self):
        try:
            msg = recv_frame(self.rin, self.max_bytes)
        except ProtocolError:
            msg = None
        if not (type(msg) is dict and msg.get("loaded") is True):
            self.broken = True
        return not self.broken

    def out_ref(self, obj):
        if type(obj) is Remote and obj._channel is self:
            return {"H": obj._hid}
        entry = self.setup_refs.get(id(obj))
        if entry is not None and entry[1] is obj:
            return {"G": entry[0]}
        raise NotPlain("cannot pass a %s to the program (only plain data, its own objects and setup globals)"
                       % type(obj).__name__)

    def in_ref(self, global_name):
        """Handle tags in a reply. A module becomes the judge's own copy only when it is
        the value of a global the test named after it (`math` -> math, `abc` ->
        collections.abc): the program cannot swap one module for another."""

        def ref(tag, p):
            if tag == "H" and type(p) is int:
                return self.remote(p)
            if tag == "M" and type(p) is list and len(p) == 2 and type(p[0]) is str and type(p[1]) is int:
                if p[0] in LOCAL_MODULES and global_name in (p[0], p[0].rpartition(".")[2]):
                    return __import__(p[0], fromlist=["_"])
                return self.remote(p[1])
            raise ProtocolError("unexpected tag %r from the program" % (tag,))

        return ref

    def remote(self, hid):
        r = self.remotes.get(hid)
        if r is None:
            r = self.remotes[hid] = Remote(self, hid)
        return r

    def ask(self, *req):
        """Send one request, return the decoded value or raise the program's exception."""
        if self.broken:
            raise ProgramGone("the program is gone")
        try:
            send_frame(self.rout, list(req))
            reply = recv_frame(self.rin, self.max_bytes)
            if reply is None:
                raise ProtocolError("the program exited")
            if type(reply) is not dict or len(reply) != 1:
                raise ProtocolError("reply must be {'v': value} or {'e': error}")
            if "v" in reply:
                return decode(reply["v"], self.in_ref(req[1] if req[0] == "get" else None))
            err = reply.get("e")
            if not (type(err) is list and len(err) == 3 and type(err[0]) is str and type(err[1]) is str
                    and type(err[2]) is bool):
                raise ProtocolError("malformed error reply")
        except (ProtocolError, OSError) as exc:
            self.broken = True
            raise ProgramGone("program channel broke: %s" % _message(exc)) from None
        raise _mapped(err[0], err[1][:MAX_MESSAGE_CHARS], err[2], stop_ok=req[0] == "next")

    def encode_args(self, value):
        try:
            return encode(value, self.out_ref)
        except NotPlain as exc:
            raise TypeError(str(exc)) from None


def _mapped(name, msg, is_exception, stop_ok):
    """The judge-side exception for a program's. Builtin Exceptions keep their type (a
    test may expect ValueError); StopIteration only from next(), so a call cannot end a
    `map`/`filter` the test iterates (`all(map(f, xs))` would pass on nothing)."""
    cls = getattr(builtins, name, None) if name else None
    if cls in (StopIteration, StopAsyncIteration) and not stop_ok:
        cls = None
    if is_exception and isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(msg)
        except Exception:
            pass
    return RemoteError("%s: %s" % (name or "exception", msg)) if is_exception else RemoteExit(name or msg)


class Remote:
    """An object that lives in the program. Only operations whose result the program could
    equally have returned as data go there (call, attribute, item, iteration, len, bool);
    comparison and hashing stay local (identity), so a lying `__eq__` never runs."""

    __slots__ = ("_channel", "_hid")

    def __init__(self, channel, hid):
        self._channel, self._hid = channel, hid

    def __call__(self, *args, **kwargs):
        c = self._channel
        return c.ask("call", self._hid, c.encode_args(list(args)),
                     [[k, c.encode_args(v)] for k, v in kwargs.items()])

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._channel.ask("attr", self._hid, name)

    def __getitem__(self, key):
        return self._channel.ask("item", self._hid, self._channel.encode_args(key))

    def __iter__(self):
        it = self._channel.ask("iter", self._hid)
        if type(it) in (list, tuple):  # the program answered with data: iterate it here
            return iter(it)
        if type(it) is not Remote:
            raise TypeError("iter() of a program object returned a %s" % type(it).__name__)
        return it

    def __next__(self):
        return self._channel.ask("next", self._hid)

    def __bool__(self):
        v = self._channel.ask("bool", self._hid)
        if type(v) is not bool:
            raise TypeError("bool() of a program object returned a %s" % type(v).__name__)
        return v

    def __len__(self):
        v = self._channel.ask("len", self._hid)
        if type(v) is not int or v < 0:
            raise TypeError("len() of a program object returned %s" % type(v).__name__)
        return v

    def __repr__(self):
        return "<program object %d>" % self._hid


class _Globals(dict):
    """The judge's builtins: a name neither the tests, the setup nor Python define is
    looked up in the program (LOAD_GLOBAL/LOAD_NAME fall back here for a dict subclass)."""

    __slots__ = ("channel",)

    def __missing__(self, name):
        if name.startswith("__"):
            raise KeyError(name)
        try:
            return self.channel.ask("get", name)
        except NameError:
            raise KeyError(name) from None


def serve_judge(job):
    verdicts = os.dup(1)
    os.dup2(2, 1)  # what the tests print goes to stderr; stdout carries only verdicts
    channel = _Channel(job["rin"], job["rout"], job["max_frame"])
    fallback = _Globals(vars(builtins))
    fallback.channel = channel
    g = {"__name__": "solution", "__builtins__": fallback}
    ok_setup = channel.hello()
    if ok_setup:
        try:
            exec(compile(job["setup"], "<setup>", "exec"), g)
            channel.setup_refs = {id(v): (k, v) for k, v in g.items() if k != "__builtins__"}
        except BaseException as exc:
            _log("setup failed", exc)
            ok_setup = False
    for i, test in enumerate(job["tests"]):
        ok = False
        if ok_setup and not channel.broken:
            try:
                exec(compile(test, "<test %d>" % i, "exec"), g)
                ok = not channel.broken
            except BaseException as exc:
                _log("test %d failed" % i, exc)
        os.write(verdicts, b"%d %d\n" % (i, ok))


def _log(what, exc):
    try:
        print(what + ":", type(exc).__name__, _message(exc), file=sys.stderr)
    except BaseException:
        pass


# ---------------------------------------------------------------- stdio role


def run_stdio():
    """stdin: b"<n>\\n" + n bytes of JSON {setup, program} + the case input, left on fd 0."""
    head = b""
    while not head.endswith(b"\n") and len(head) < 24:
        byte = os.read(0, 1)
        if not byte:
            raise SystemExit("stdio job header cut short")
        head += byte
    job = json.loads(_read_exact(0, int(head)) or b"null")
    ns = {"__name__": "__main__"}
    try:
        exec(compile(job["setup"] + "\n" + job["program"], "<solution>", "exec"), ns)
    except SystemExit:
        pass
    sys.stdout.flush()


def main(role):
    if role == "stdio":
        return run_stdio()
    job = json.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    if role == "program":
        serve_program(job)
    elif role == "judge":
        serve_judge(job)
    else:
        raise SystemExit("unknown role %r" % (role,))
