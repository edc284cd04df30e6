"""Transport layer: typed msgpack frames, bounded channels, bucketed weight broadcast.

- `wire`: one msgspec Struct per message kind (schema-versioned).
- `frames`: encode/decode to [header, raw array frames...]; `FrameError`, `RejectCounter`.
- `nesting`: how deep a msgpack header nests, found without recursion (decode's guard).
- `queues`: `LocalChannel` and ZeroMQ PUSH/PULL channels with the same back-pressure rules.
- `buckets`: `BucketPlan`, `pack`, `unpack` (pure; checksummed flat buffers).
- `weight_sync`: `WeightPublisher` / `WeightSubscriber` (ROUTER/DEALER + READY/ACK).
- `dispatch`: credit-based work dispatch over ROUTER/DEALER.
"""

from peirce.transport.frames import FrameError, RejectCounter, decode, encode
from peirce.transport.wire import (
    SCHEMA_VERSION,
    Control,
    ControlKind,
    Message,
    RolloutSample,
    ScoredSample,
    TaskMsg,
    TensorSpec,
    WeightBucketHeader,
    WeightBucketMsg,
)

__all__ = [
    "SCHEMA_VERSION", "Control", "ControlKind", "FrameError", "Message", "RejectCounter",
    "RolloutSample", "ScoredSample", "TaskMsg", "TensorSpec", "WeightBucketHeader",
    "WeightBucketMsg", "decode", "encode",
]
