"""Typed wire messages: one msgspec Struct per message kind, each with `schema`.

Why msgspec Structs: decoding is validated against the exact type (a missing field, a
wrong type or a failed `__post_init__` check becomes one clear error naming the field),
and the msgpack they produce is compact. Arrays (token ids, logprobs, weight buckets)
are `numpy.ndarray` fields; `peirce.transport.frames.encode` sends them as raw extra
frames, never inline and never pickled, and the header records where each one went.

Every message carries `schema` (= SCHEMA_VERSION when built here); bump it whenever a
field changes meaning so a stale peer is rejected with both versions named instead of
being misread.
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, Any, Union

import msgspec
import numpy as np

from peirce.tasks.base import Task

SCHEMA_VERSION = 2  # 2: TaskMsg.sampling is a typed RequestSampling (was a dict), TaskMsg.prompt

NonNeg = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]

#: numpy's own limit; also what keeps `math.prod(shape)` a few machine words.
MAX_TENSOR_DIMS = 64
#: Far above any real bucket (SmolLM2-135M: 273 tensors in all); bounds header work.
MAX_TENSORS_PER_BUCKET = 1 << 16
# Length limits are checked by msgspec from the array header, before any element is read.
Shape = Annotated[tuple[NonNeg, ...], msgspec.Meta(max_length=MAX_TENSOR_DIMS)]

#: Bytes per element for every dtype a weight bucket may hold (kept torch-free).
DTYPE_ITEMSIZE: dict[str, int] = {
    "bool": 1, "uint8": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8,
    "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
    "float8_e4m3fn": 1, "float8_e5m2": 1,
}


def _set(obj: msgspec.Struct, name: str, value: Any) -> None:
    msgspec.structs.force_setattr(obj, name, value)


def as_array(value: Any, dtype: str, kind: str, field: str) -> np.ndarray:
    """Coerce a list or 1-D array to a contiguous `dtype` array; reject a wrong kind.

    `kind` is a numpy kind string ("iu" for integers, "f" for floats): token ids given
    as floats are an error, not silently truncated. No copy when already right.
    """
    arr = np.asarray(value)
    if arr.size == 0:
        return np.zeros(0, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{field}: expected a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in kind:
        raise ValueError(f"{field}: expected dtype kind {kind!r}, got {arr.dtype}")
    if arr.dtype != np.dtype(dtype):
        if kind == "iu":
            info = np.iinfo(dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise ValueError(f"{field}: values outside {dtype} range")
        arr = arr.astype(dtype)
    return np.ascontiguousarray(arr)


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of all wire messages; `type` is the tag msgspec writes and dispatches on."""

    schema: int = SCHEMA_VERSION


class RequestSampling(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-request sampling overrides; None = the rollout engine's default. Typed (not a
    dict) so an unknown key is a decode error at the boundary; the values' rules (ranges)
    are checked by the worker's SamplingSpec, which names field and value."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None  # MASA: each solution request's own cutoff
    seed: int | None = None  # the group's own sampling seed (sample i draws from seed + i)

    def overrides(self) -> dict[str, Any]:
        """The set fields, as SamplingSpec keyword arguments."""
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


class TaskMsg(Msg, tag="task"):
    """One task dispatched to a rollout worker, to be sampled `n_samples` times.

    `prompt`: the user turn to render instead of `task.puzzle_text` (MASA: the meta
    prompt for phase "meta", the puzzle plus the notion hint for "solve"); None = the task's own.
    """

    task: Task
    group_id: str  # all samples of one task dispatch share it (GRPO group)
    n_samples: Positive = 1
    attempt: NonNeg = 0  # re-dispatch count after a worker loss
    sampling: RequestSampling = RequestSampling()  # per-request SamplingSpec overrides
    phase: str = "solve"  # MASA multi-phase prompts: "meta" | "solve"
    prompt: str | None = None
    policy_version_at_dispatch: NonNeg = 0

    def __post_init__(self) -> None:
        if not self.group_id:
            raise ValueError("group_id: must be non-empty")
        if not self.phase:
            raise ValueError("phase: must be non-empty")


class RolloutSample(Msg, tag="rollout"):
    """One generated response with the engine's per-token logprobs.

    `policy_version` is the version that generated the first response token.
    `version_segments` is [(start_token, version), ...] ascending when weights changed
    mid-generation (interruptible rollouts); empty means the whole response came from
    `policy_version`. When given, it starts with (0, policy_version).
    """

    task_id: str
    family: str = msgspec.field(name="task_name")  # Task.family; the wire key predates the name
    level: int
    group_id: str
    sample_index: NonNeg
    prompt_token_ids: np.ndarray  # int32, out-of-band frame
    response_token_ids: np.ndarray  # int32, out-of-band frame
    response_logprobs: np.ndarray  # float32 per response token, out-of-band frame
    policy_version: NonNeg
    version_segments: list[tuple[NonNeg, NonNeg]] = []
    completion: str = ""
    prefill: str = ""  # text forced at the start of the response (MASA phases)
    finish_reason: str = ""  # "stop" | "length" | "abort"
    gen_seconds: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "prompt_token_ids", as_array(self.prompt_token_ids, "int32", "iu", "prompt_token_ids"))
        resp = as_array(self.response_token_ids, "int32", "iu", "response_token_ids")
        _set(self, "response_token_ids", resp)
        lp = as_array(self.response_logprobs, "float32", "f", "response_logprobs")
        _set(self, "response_logprobs", lp)
        if len(lp) != len(resp):
            raise ValueError(
                f"response_logprobs: length {len(lp)} != response_token_ids length {len(resp)}"
            )
        segs = self.version_segments
        if segs:
            if tuple(segs[0]) != (0, self.policy_version):
                raise ValueError(
                    f"version_segments: must start with (0, policy_version={self.policy_version}), got {tuple(segs[0])}"
                )
            for (s0, v0), (s1, v1) in zip(segs, segs[1:]):
                if not (s1 > s0 and v1 > v0):
                    raise ValueError(
                        f"version_segments: starts and versions must increase, got {(s0, v0)} then {(s1, v1)}"
                    )
            if segs[-1][0] > len(resp):
                raise ValueError(f"version_segments: start {segs[-1][0]} beyond response length {len(resp)}")
        if not math.isfinite(self.gen_seconds) or self.gen_seconds < 0:
            raise ValueError(f"gen_seconds: must be finite and >= 0, got {self.gen_seconds}")

    def token_versions(self) -> np.ndarray:
        """Policy version per response token (int64), expanded from the segments."""
        out = np.full(len(self.response_token_ids), self.policy_version, dtype=np.int64)
        for start, version in self.version_segments:
            out[start:] = version
        return out


#: A fault's reason is a counter key (a FrameError reason such as "unservable"): short,
#: lower-case, so it can label a Prometheus series without escaping.
FaultReason = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")]
MAX_FAULT_DETAIL = 512


class WorkerFault(Msg, tag="fault"):
    """A worker's answer for an item it could not serve, instead of its results.

    Typed (not a marker frame) so the one decoder that reads results also bounds and
    validates refusals: a reason that is not a counter key, or a detail too long to log,
    is a decode error like any other malformed result."""

    reason: FaultReason
    detail: Annotated[str, msgspec.Meta(max_length=MAX_FAULT_DETAIL)] = ""

    @classmethod
    def of(cls, reason: str, detail: str = "") -> WorkerFault:
        """A fault from a FrameError's parts, the detail cut to fit."""
        return cls(reason=reason, detail=detail[:MAX_FAULT_DETAIL])


class ScoredSample(Msg, tag="scored"):
    """A rollout sample plus its verifier outcome."""

    sample: RolloutSample
    reward: float
    correct: bool
    format_ok: bool
    reward_details: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if not math.isfinite(self.reward):
            raise ValueError(f"reward: must be finite, got {self.reward}")


class TensorSpec(msgspec.Struct, frozen=True, array_like=True):
    """Where one tensor sits in a bucket buffer (array-like: compact headers)."""

    name: str
    dtype: str
    shape: Shape  # at most MAX_TENSOR_DIMS dims
    offset: NonNeg
    nbytes: NonNeg

    def __post_init__(self) -> None:
        size = DTYPE_ITEMSIZE.get(self.dtype)
        if size is None:
            raise ValueError(f"dtype: {self.dtype!r} not one of {sorted(DTYPE_ITEMSIZE)}")
        if len(self.shape) > MAX_TENSOR_DIMS:  # built here, not decoded (decoding checks the length)
            raise ValueError(f"shape: {self.name} has {len(self.shape)} dims > MAX_TENSOR_DIMS {MAX_TENSOR_DIMS}")
        if size * math.prod(self.shape) != self.nbytes:
            raise ValueError(
                f"nbytes: {self.name} declares {self.nbytes} but shape {self.shape} x {self.dtype} is "
                f"{size * math.prod(self.shape)}"
            )


class WeightBucketHeader(Msg, tag="bucket_header"):
    """Describes one flat weight buffer of a versioned broadcast."""

    version: NonNeg
    bucket_index: NonNeg
    n_buckets: Positive
    tensors: Annotated[list[TensorSpec], msgspec.Meta(max_length=MAX_TENSORS_PER_BUCKET)]
    nbytes: NonNeg  # buffer length
    checksum: int
    checksum_algo: str  # "xxh3_64" | "crc32"

    def __post_init__(self) -> None:
        if self.bucket_index >= self.n_buckets:
            raise ValueError(f"bucket_index: {self.bucket_index} >= n_buckets {self.n_buckets}")
        for t in self.tensors:
            if t.offset + t.nbytes > self.nbytes:
                raise ValueError(
                    f"tensors: {t.name} spans [{t.offset}, {t.offset + t.nbytes}) beyond bucket nbytes {self.nbytes}"
                )


class WeightBucketMsg(Msg, tag="bucket"):
    """A bucket header and its buffer (uint8, out-of-band frame)."""

    header: WeightBucketHeader
    data: np.ndarray

    def __post_init__(self) -> None:
        data = as_array(self.data, "uint8", "u", "data")
        _set(self, "data", data)
        if len(data) != self.header.nbytes:
            raise ValueError(f"data: {len(data)} bytes but header.nbytes is {self.header.nbytes}")


class WeightBucketRefMsg(Msg, tag="bucket_ref"):
    """A bucket header and where its bytes lie in a shared-memory file of the sender's host
    (`weight_sync.strategy: shm`; peirce.transport.shm_sync checks path and host)."""

    header: WeightBucketHeader
    path: Annotated[str, msgspec.Meta(max_length=4096)]
    offset: NonNeg
    boot_id: Annotated[str, msgspec.Meta(max_length=256)]  # the sender's kernel: same host iff equal


class ControlKind(str, enum.Enum):
    READY = "ready"  # payload: {"version": int} currently applied
    ACK = "ack"  # payload: {"version": int} received and verified
    NACK = "nack"  # payload: {"version": int, "reason": str}: resend please
    BYE = "bye"  # the sender leaves; do not wait for it
    STOP = "stop"
    DRAIN = "drain"
    PAUSE = "pause"
    RESUME = "resume"
    HEARTBEAT = "heartbeat"
    REJOIN = "rejoin"  # publisher -> subscriber: you are not registered; send READY again


class Control(Msg, tag="control"):
    kind: ControlKind
    payload: dict[str, Any] = {}


Message = Union[TaskMsg, RolloutSample, ScoredSample, WorkerFault, WeightBucketHeader, WeightBucketMsg,
                WeightBucketRefMsg, Control]
MESSAGE_TYPES: dict[str, type[Msg]] = {
    c.__struct_config__.tag: c  # type: ignore[misc]
    for c in (TaskMsg, RolloutSample, ScoredSample, WorkerFault, WeightBucketHeader, WeightBucketMsg,
              WeightBucketRefMsg, Control)
}
