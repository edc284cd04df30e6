"""The ZeroMQ control plane of the CUDA weight-sync strategies: frames and pure rules.

With `weight_sync.strategy` nccl or cuda_ipc the tensor bytes go through vLLM's
weight-transfer engines (NCCL broadcast, or CUDA IPC handles); ZeroMQ still carries the
handshake of peirce.transport.sync_state (READY / ACK / NACK / HEARTBEAT / BYE / REJOIN,
as `Control` frames) plus the four calls vLLM's trainer engine makes on the inference
side (`VLLMWeightSyncClient`: init, start, update, finish; plus shutdown, and abort after a
failed transfer), as `TransferOp` frames answered by `OpDone`. Nothing here touches CUDA
or sockets, so it is tested on CPU.

Why the rules below differ from the ZeroMQ strategy's: an NCCL broadcast is a collective
of a fixed group, and the learner's GPU weights are the only copy of a version (no packed
copy is kept). So:

* A peer the book asks to be sent a version is *due*; the due peers of a publish form the
  transfer group, the whole group is sent in one collective. `GroupPlan` re-forms the group
  only when its membership changes (a join, an eviction), so steady publishing reuses it.
* A late joiner (READY while no publish is running) cannot be sent the latest version at
  once: the weights have moved on since. It is recorded as *deferred* and joins the group
  at the next publish, which sends it the newest version. Every other rule (who is
  awaited, eviction on a missed ACK, probation, REJOIN) is the book's, unchanged.
* A transfer that fails on any member fails for the group (a collective): every member is
  unregistered, the healthy ones told to abort; they REJOIN at their next heartbeat and get
  the next version. An aborted engine keeps generation paused until then (its weights may
  be partly new), or until its hold timeout.
* Each engine of peirce is one vLLM worker (tensor parallel 1), so member i of a group
  of n takes NCCL rank 1 + i of 1 + n; the learner is rank 0.
"""

from __future__ import annotations

import base64
import logging
import pickle
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from peirce.transport.frames import FrameError

log = logging.getLogger(__name__)

OP_MARKER = b"peirce-transfer-op/1"  # first frame of a TransferOp / OpDone; Controls never start so
OP_MAX_BYTES = 1 << 26  # an update's metadata (names, shapes, IPC handles) for a large model fits
OpName = Literal["init", "start", "update", "finish", "abort", "shutdown"]


class TransferOp(msgspec.Struct, tag="transfer_op", forbid_unknown_fields=True):
    """Learner -> engine: run one weight-transfer call of vLLM's `LLM` (RLOfflineMixin)."""

    seq: int  # the learner's request number; the answer names it
    op: OpName
    version: int  # the policy version being transferred (-1 for init/shutdown)
    info: dict[str, Any] = {}  # init_info (init) or update_info (update); empty otherwise


class OpDone(msgspec.Struct, tag="op_done", forbid_unknown_fields=True):
    """Engine -> learner: the call `seq` returned (ok) or raised (error says what)."""

    seq: int
    ok: bool
    error: str = ""


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(TransferOp | OpDone)


def encode_op(msg: TransferOp | OpDone) -> list[bytes]:
    return [OP_MARKER, _ENCODER.encode(msg)]


def is_op(frames: list) -> bool:
    return len(frames) == 2 and bytes(frames[0]) == OP_MARKER


def decode_op(frames: list, expect: type[TransferOp] | type[OpDone] | None = None) -> TransferOp | OpDone:
    """Raises FrameError (counted by the caller) for anything but a valid op frame pair
    (of type `expect`, when given)."""
    op = _decode_op(frames)
    if expect is not None and not isinstance(op, expect):
        raise FrameError("type", f"expected {expect.__name__}, got {type(op).__name__}")
    return op


def _decode_op(frames: list) -> TransferOp | OpDone:
    if not is_op(frames):
        raise FrameError("frames", f"expected [{OP_MARKER.decode()}, body], got {len(frames)} frame(s)")
    body = frames[1] if isinstance(frames[1], (bytes, memoryview)) else memoryview(frames[1])
    if len(body) > OP_MAX_BYTES:
        raise FrameError("oversized", f"op body of {len(body)} bytes > {OP_MAX_BYTES}")
    try:
        return _DECODER.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise FrameError("invalid", f"op: {exc}") from None


# -- the group ---------------------------------------------------------------------------------

def member_init_info(init_info: dict[str, Any], index: int) -> dict[str, Any]:
    """The init_info for member `index` of a group: NCCL ranks 1 + index (the learner is 0).

    vLLM's trainer engine builds one worker init_info with rank_offset 1 for a single
    (possibly data-parallel) LLM; peirce runs one LLM per engine actor, so each member
    gets its own offset. IPC init info has no ranks and passes unchanged."""
    if "rank_offset" not in init_info:
        return dict(init_info)
    world = init_info.get("world_size")
    if not isinstance(world, int) or not 1 <= 1 + index < world:
        raise ValueError(f"member {index}: rank {1 + index} does not fit world_size {world!r}")
    return {**init_info, "rank_offset": int(init_info["rank_offset"]) + index}


@dataclass
class GroupPlan:
    """Which peers form the current transfer group; re-formed only when membership changes."""

    members: tuple[bytes, ...] = ()
    formed: int = 0  # times a group was formed (a re-form costs an NCCL rendezvous)

    def needs_regroup(self, due: list[bytes]) -> bool:
        return tuple(sorted(due)) != self.members

    def regroup(self, due: list[bytes]) -> tuple[bytes, ...]:
        self.members = tuple(sorted(due))
        self.formed += 1
        return self.members

    def broken(self) -> None:
        """A transfer failed: the group's communicator is unusable; form a new one next time."""
        self.members = ()


@dataclass
class DueBook:
    """The `sync_state.Wire` of the CUDA strategies: records who is due which version.

    `send_version` never moves bytes: for the version being published it marks the peer
    due (the publish sends the whole due group at once); for an older one (a late joiner
    or a NACK between publishes) it marks the peer deferred, to be sent the next version.
    Neither refuses, so the book never evicts a peer for it."""

    publishing: int | None = None  # the version whose weights the learner holds right now
    due: dict[bytes, int] = field(default_factory=dict)
    deferred: set[bytes] = field(default_factory=set)
    rejoins: list[bytes] = field(default_factory=list)  # REJOINs to send (the I/O thread sends them)

    def send_version(self, ident: bytes, version: int) -> bool:
        if version == self.publishing:
            self.due[ident] = version
            self.deferred.discard(ident)
        else:
            self.deferred.add(ident)
        return True

    def send_rejoin(self, ident: bytes) -> None:
        self.rejoins.append(ident)

    def take_due(self, version: int) -> list[bytes]:
        """The peers due `version`, in a stable order; cleared."""
        out = sorted(i for i, v in self.due.items() if v == version)
        self.due.clear()
        return out

    def forget(self, ident: bytes) -> None:
        self.due.pop(ident, None)
        self.deferred.discard(ident)


# -- payloads ------------------------------------------------------------------------------

def wire_update_info(update_info: dict[str, Any]) -> dict[str, Any]:
    """An update_info msgpack can carry. CUDA IPC handles are tuples of torch objects; like
    vLLM's HTTP client they travel pickled in `ipc_handles_pickled`, which the engine's
    workers accept only with VLLM_ALLOW_INSECURE_SERIALIZATION=1 (set for cuda_ipc only;
    IPC handles open only on the learner's own GPU, so the channel is on one machine)."""
    handles = update_info.get("ipc_handles")
    if handles is None:
        return update_info
    out = {k: v for k, v in update_info.items() if k != "ipc_handles"}
    out["ipc_handles_pickled"] = base64.b64encode(pickle.dumps(handles)).decode("ascii")
    return out
