"""Message <-> frame list: [msgpack header, raw array frame, ...]; validated decode.

Arrays never go inline: `encode` replaces each ndarray field by a descriptor
`{"$oob": frame_index, "dtype": str, "len": n}` and appends the array's own buffer as
an extra frame (no copy with `send_multipart(copy=False)`). `decode` checks, in order:
frame sizes against `max_frame_bytes`, the header against `max_header_bytes` and its
nesting against `max_depth` (so parsing a hostile header is bounded by its capped size,
1 MiB by default, and never raises RecursionError), the header is msgpack with a known `type`, the
`schema` matches ours (the error names both versions), every field validates, each
descriptor's `len * itemsize` equals its frame's actual bytes, and every extra frame is
used exactly once. Arrays come back as `np.frombuffer` views of the received frames
(zero-copy). Any failure, whatever raised it, becomes `FrameError(reason, detail)`;
receivers count the reason in a `RejectCounter` and go on serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from peirce.transport.nesting import nesting_exceeds
from peirce.transport.wire import MESSAGE_TYPES, SCHEMA_VERSION, Message, Msg

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 1 << 30
#: Headers are field values only (arrays travel out of band): a few KiB in practice.
#: The cap bounds what a hostile header costs (decode memory, the nesting scan's time).
DEFAULT_MAX_HEADER_BYTES = 1 << 20
#: Honest headers nest about 6 deep (TaskMsg > Task > puzzle > its values).
DEFAULT_MAX_DEPTH = 32
#: numpy dtypes allowed in out-of-band frames (weights travel as uint8 buckets).
OOB_DTYPES = frozenset({"uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"})

Frame = Any  # bytes | memoryview | np.ndarray | zmq.Frame: anything with the buffer protocol


class FrameError(Exception):
    """A received frame list is not a valid message. `reason` is a short counter key:
    oversized | empty | malformed | depth | type | schema | invalid | size | frames |
    checksum | unexpected (a decoder bug surfaced by hostile input, logged with its type)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RejectCounter:
    """Counts rejected frames per reason; `hooks` are called as hook(reason, detail),
    e.g. by a Prometheus exporter incrementing a labelled counter. Thread-safe."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hooks: list[Callable[[str, str], None]] = []

    def record(self, err: FrameError, where: str = "") -> None:
        with self._lock:
            self._counts[err.reason] = self._counts.get(err.reason, 0) + 1
        log.warning("rejected%s: %s", f" on {where}" if where else "", err)
        for hook in self.hooks:
            try:
                hook(err.reason, err.detail)
            except Exception:  # a broken exporter must not kill a receiver
                log.exception("reject hook failed")

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


class _Preamble(msgspec.Struct):
    """Only the fields needed to route: read before full validation."""

    type: str
    schema: int


_tls = threading.local()


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.ndim != 1 or obj.dtype.name not in OOB_DTYPES:
            raise TypeError(f"out-of-band arrays must be 1-D {sorted(OOB_DTYPES)}, got {obj.dtype}{obj.shape}")
        frames: list[Frame] = _tls.out
        frames.append(np.ascontiguousarray(obj))
        return {"$oob": len(frames) - 1, "dtype": obj.dtype.name, "len": int(obj.shape[0])}
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def _dec_hook(typ: type, obj: Any) -> Any:
    if typ is not np.ndarray:
        raise TypeError(f"unsupported type {typ}")
    if not (isinstance(obj, dict) and obj.keys() == {"$oob", "dtype", "len"}):
        raise FrameError("malformed", f"array field is not an out-of-band descriptor: {obj!r:.80}")
    idx, dtype, n = obj["$oob"], obj["dtype"], obj["len"]
    frames: Sequence[memoryview] = _tls.frames
    used: set[int] = _tls.used
    if not isinstance(idx, int) or not 1 <= idx < len(frames):
        raise FrameError("frames", f"descriptor points at frame {idx!r}, message has {len(frames)} frames")
    if idx in used:
        raise FrameError("frames", f"frame {idx} referenced twice")
    if dtype not in OOB_DTYPES:
        raise FrameError("invalid", f"dtype {dtype!r} not one of {sorted(OOB_DTYPES)}")
    if not isinstance(n, int) or n < 0:
        raise FrameError("invalid", f"len {n!r} is not a non-negative int")
    want, got = n * np.dtype(dtype).itemsize, frames[idx].nbytes
    if want != got:
        raise FrameError("size", f"frame {idx} declares {n} x {dtype} = {want} bytes, carries {got}")
    used.add(idx)
    return np.frombuffer(frames[idx], dtype=dtype)


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DECODER = msgspec.msgpack.Decoder(Message, dec_hook=_dec_hook)
_PREAMBLE = msgspec.msgpack.Decoder(_Preamble)


def encode(msg: Msg) -> list[Frame]:
    """Frames for `msg`: [header bytes, array buffers...] (buffers are not copied)."""
    out: list[Frame] = [b""]
    _tls.out = out
    try:
        out[0] = _ENCODER.encode(msg)
    finally:
        _tls.out = None
    return out


def _view(frame: Frame) -> memoryview:
    buf = getattr(frame, "buffer", None)  # zmq.Frame
    return (buf if buf is not None else memoryview(frame)).cast("B")


def decode(frames: Sequence[Frame], *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
           max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, max_depth: int = DEFAULT_MAX_DEPTH,
           expect: type[Msg] | None = None) -> Message:
    """Validate and decode one frame list; raises only FrameError. See the module docstring."""
    try:
        return _decode(frames, max_frame_bytes, max_header_bytes, max_depth, expect)
    except FrameError:
        raise
    except RecursionError:  # only if the caller's stack is already deep: depth was checked
        raise FrameError("depth", "header nests deeper than this thread's stack allows") from None
    except Exception as e:  # a hostile peer must never reach a receiver loop with another type
        log.exception("decode raised %s on hostile input", type(e).__name__)
        raise FrameError("unexpected", f"{type(e).__name__}: {e}"[:200]) from None


def _decode(frames: Sequence[Frame], max_frame_bytes: int, max_header_bytes: int, max_depth: int,
            expect: type[Msg] | None) -> Message:
    if not frames:
        raise FrameError("empty", "no frames")
    views = [_view(f) for f in frames]
    for i, v in enumerate(views):
        if v.nbytes > max_frame_bytes:
            raise FrameError("oversized", f"frame {i} is {v.nbytes} bytes > max_frame_bytes {max_frame_bytes}")
    if views[0].nbytes > max_header_bytes:
        raise FrameError("oversized", f"header is {views[0].nbytes} bytes > max_header_bytes {max_header_bytes}")
    if nesting_exceeds(views[0], max_depth):
        raise FrameError("depth", f"header nests deeper than max_depth {max_depth}")
    try:
        pre = _PREAMBLE.decode(views[0])
    except msgspec.DecodeError as e:
        raise FrameError("malformed", f"header is not a msgpack message: {e}") from None
    except msgspec.ValidationError as e:
        raise FrameError("malformed", f"header lacks routing fields: {e}") from None
    if pre.schema != SCHEMA_VERSION:
        raise FrameError("schema", f"peer sent schema version {pre.schema}, this side speaks {SCHEMA_VERSION}")
    cls = MESSAGE_TYPES.get(pre.type)
    if cls is None:
        raise FrameError("type", f"unknown message type {pre.type!r}; known: {sorted(MESSAGE_TYPES)}")
    if expect is not None and cls is not expect:
        raise FrameError("type", f"expected {expect.__name__}, got {cls.__name__}")
    _tls.frames, _tls.used = views, set()
    try:
        msg = _DECODER.decode(views[0])
        if len(_tls.used) != len(views) - 1:
            unused = sorted(set(range(1, len(views))) - _tls.used)
            raise FrameError("frames", f"extra frames {unused} not referenced by the header")
    except msgspec.ValidationError as e:
        raise FrameError("invalid", f"{cls.__name__}: {e}") from None
    except msgspec.DecodeError as e:
        raise FrameError("malformed", f"{cls.__name__}: {e}") from None
    finally:
        _tls.frames = _tls.used = None
    return msg
