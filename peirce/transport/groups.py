"""Several messages in one dispatch payload (a GRPO group travels together).

Layout: `[counts, frames of msg 0..., frames of msg 1..., ...]` where `counts` is a
msgpack list with the number of frames of each message. Decoding validates counts
against the frames received before decoding any message.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from peirce.transport.frames import Frame, FrameError, decode, encode
from peirce.transport.wire import Message, Msg

_COUNTS = msgspec.msgpack.Decoder(list[int])
_ENC = msgspec.msgpack.Encoder()


def pack_messages(messages: Sequence[Msg]) -> list[Frame]:
    encoded = [encode(m) for m in messages]
    out: list[Frame] = [_ENC.encode([len(f) for f in encoded])]
    for frames in encoded:
        out.extend(frames)
    return out


def unpack_messages(frames: Sequence[Frame], max_frame_bytes: int | None = None) -> list[Message]:
    if not frames:
        raise FrameError("empty", "group payload has no frames")
    try:
        counts = _COUNTS.decode(bytes(frames[0]) if not isinstance(frames[0], bytes) else frames[0])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FrameError("malformed", f"group header: {exc}") from None
    if any(c < 1 for c in counts) or sum(counts) != len(frames) - 1:
        raise FrameError("frames", f"group header declares {counts} frames, got {len(frames) - 1}")
    out: list[Message] = []
    pos = 1
    kwargs = {} if max_frame_bytes is None else {"max_frame_bytes": max_frame_bytes}
    for c in counts:
        out.append(decode(frames[pos : pos + c], **kwargs))
        pos += c
    return out
