"""Several messages in one dispatch payload (a GRPO group travels together).

Layout: `[counts, frames of msg 0..., frames of msg 1..., ...]` where `counts` is a
msgpack list with the number of frames of each message. Decoding validates counts
against the frames received before decoding any message.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from peirce.transport.frames import Frame, FrameError, decode, encode
from peirce.transport.wire import Message, Msg, WorkerFault

_COUNTS = msgspec.msgpack.Decoder(list[int])
_MAX_COUNT_BYTES = 9  # a msgpack uint64 (the list's own 5-byte prefix fits in the first frame's share)
_ENC = msgspec.msgpack.Encoder()


def pack_messages(messages: Sequence[Msg]) -> list[Frame]:
    encoded = [encode(m) for m in messages]
    out: list[Frame] = [_ENC.encode([len(f) for f in encoded])]
    for frames in encoded:
        out.extend(frames)
    return out


def fault_payload(err: FrameError) -> list[Frame]:
    """A worker's answer for an item it cannot serve: one WorkerFault naming why."""
    return pack_messages([WorkerFault.of(err.reason, err.detail)])


def unpack_messages(frames: Sequence[Frame], max_frame_bytes: int | None = None) -> list[Message]:
    if not frames:
        raise FrameError("empty", "group payload has no frames")
    try:
        head = memoryview(frames[0]).cast("B")
    except TypeError as exc:
        raise FrameError("malformed", f"group header is not a byte buffer: {exc}") from None
    if head.nbytes > _MAX_COUNT_BYTES * len(frames):  # one count per frame at most
        raise FrameError("oversized", f"group header is {head.nbytes} bytes for {len(frames)} frames")
    try:
        counts = _COUNTS.decode(head)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameError("malformed", f"group header: {exc}") from None
    if any(c < 1 for c in counts) or sum(counts) != len(frames) - 1:
        raise FrameError("frames", f"group header declares {counts[:8]} frames, got {len(frames) - 1}")
    out: list[Message] = []
    pos = 1
    kwargs = {} if max_frame_bytes is None else {"max_frame_bytes": max_frame_bytes}
    for c in counts:
        out.append(decode(frames[pos : pos + c], **kwargs))
        pos += c
    return out
