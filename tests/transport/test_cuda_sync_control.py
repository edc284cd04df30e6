"""The CUDA strategies' control plane over real ZeroMQ on loopback: registration, ACKs,
group forming, late joiners, failures and silence.

Two stand-ins, both for parts that cannot run without CUDA (tests/gpu/test_cuda_weight_sync.py
runs the real ones): `StandInTrainerEngine` makes the same client calls in the same order
as vLLM's NCCL/IPC trainer engines (init at group forming; start, update, finish per
publish) but carries the tensors inside update_info instead of NCCL or IPC handles;
`RecordingTarget` stands in for a vLLM engine's weight-transfer calls and its lock.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
import zmq

from peirce.rollout.cuda_weight_transfer import CudaWeightsInbox
from peirce.transport.cuda_sync import CudaWeightSender
from peirce.transport.frames import encode
from peirce.transport.wire import Control, ControlKind


def weights(version: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(version)
    return {"model.embed_tokens.weight": torch.randn(8, 4, generator=g),
            "model.layers.0.mlp.up_proj.weight": torch.randn(6, 4, generator=g)}


class StandInTrainerEngine:
    """vLLM's trainer-engine call sequence, with the tensors in update_info (no CUDA here)."""

    def __init__(self, client, holder, n_members: int) -> None:
        self.client, self.holder = client, holder
        client.init_weight_transfer_engine({"master_address": "127.0.0.1", "master_port": 1, "rank_offset": 1,
                                            "world_size": 1 + n_members})
        self.closed = False

    def send_weights(self) -> None:
        state = self.holder.state
        self.client.start_weight_update()
        self.client.update_weights({"names": list(state), "values": [t.flatten().tolist() for t in state.values()],
                                    "shapes": [list(t.shape) for t in state.values()]})
        self.client.finish_weight_update()

    def shutdown(self) -> None:
        self.closed = True


class RecordingTarget:
    """Stands in for an engine's vLLM weight-transfer calls; checks the lock is held while loading."""

    def __init__(self, version: int = -1, fail_update: bool = False) -> None:
        self.lock = threading.Lock()
        self._version = version
        self.fail_update = fail_update
        self.inits: list[dict] = []
        self.weights: dict[str, torch.Tensor] = {}
        self._staged: dict[str, torch.Tensor] = {}
        self.aborts = 0

    @property
    def version(self) -> int:
        return self._version

    def init(self, init_info: dict) -> None:
        self.inits.append(init_info)

    def start(self) -> None:
        assert self.lock.locked(), "start without the engine lock"
        self._staged = {}

    def update(self, info: dict) -> None:
        assert self.lock.locked(), "update without the engine lock"
        if self.fail_update:
            raise RuntimeError("stand-in load failure")
        for name, values, shape in zip(info["names"], info["values"], info["shapes"], strict=True):
            self._staged[name] = torch.tensor(values).reshape(shape)

    def finish(self, version: int) -> None:
        self.weights, self._version = self._staged, version

    def abort(self) -> None:
        self.aborts += 1

    def shutdown(self) -> None:
        pass


def wait_until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def sender():
    s = CudaWeightSender("nccl", "tcp://127.0.0.1:*", ack_timeout=5.0, trainer_factory=StandInTrainerEngine)
    yield s
    s.close()


def inbox(sender: CudaWeightSender, name: str, target: RecordingTarget, **kw) -> CudaWeightsInbox:
    box = CudaWeightsInbox(sender.endpoint, name, target, heartbeat_s=0.2, **kw)
    wait_until(lambda: name in sender.subscribers)
    return box


def assert_exact(target: RecordingTarget, version: int) -> None:
    want = weights(version)
    assert target.version == version and set(target.weights) == set(want)
    for k, v in want.items():
        assert torch.equal(target.weights[k], v), k


def test_publish_reaches_every_engine_once_acked_and_the_group_is_reused(sender):
    loaded: list[tuple[int, float]] = []
    a, b = RecordingTarget(), RecordingTarget()
    boxes = [inbox(sender, "a", a, on_weights=lambda v, s: loaded.append((v, s))), inbox(sender, "b", b)]
    try:
        for version in (1, 2):
            stats = sender.publish(weights(version), version)
            assert sorted(stats.acked) == ["a", "b"] and not stats.evicted
            assert_exact(a, version)
            assert_exact(b, version)
        assert sender.plan.formed == 1  # same members: one rendezvous for both publishes
        assert sorted(t.inits[0]["rank_offset"] for t in (a, b)) == [1, 2]  # one NCCL rank each
        assert [v for v, _ in loaded] == [1, 2] and boxes[0].wait_for(2, 0) and boxes[0].take() is None
        assert not a.lock.locked() and not b.lock.locked()  # generation resumes after finish
        assert boxes[1].ops == ["init", "start", "update", "finish", "start", "update", "finish"]
    finally:
        for box in boxes:
            box.close()


def test_a_late_joiner_gets_the_next_version_with_everyone(sender):
    a, late = RecordingTarget(), RecordingTarget()
    first = inbox(sender, "a", a)
    try:
        sender.publish(weights(1), 1)
        second = inbox(sender, "late", late)
        time.sleep(0.5)  # heartbeats: it is registered, but version 1's weights are gone
        assert late.version == -1 and sender.due.deferred == {b"late"}
        stats = sender.publish(weights(2), 2)
        assert sorted(stats.acked) == ["a", "late"]
        assert_exact(late, 2)
        assert sender.plan.formed == 2  # membership changed: the group was formed again
        assert first.ops[-5:] == ["shutdown", "init", "start", "update", "finish"]  # the old group let go first
        second.close()
    finally:
        first.close()


def test_a_failing_engine_fails_the_collective_and_everyone_catches_up_at_the_next_version(sender):
    a, bad = RecordingTarget(), RecordingTarget(fail_update=True)
    boxes = [inbox(sender, "a", a), inbox(sender, "bad", bad)]
    try:
        stats = sender.publish(weights(1), 1)
        assert sorted(stats.evicted) == ["a", "bad"] and not stats.acked
        assert a.aborts == 1 and a.version == -1
        assert a.lock.locked()  # aborted mid-update: no generation on partly new weights
        bad.fail_update = False
        wait_until(lambda: set(sender.subscribers) == {"a", "bad"})  # REJOIN -> READY at their heartbeats
        stats = sender.publish(weights(2), 2)
        assert sorted(stats.acked) == ["a", "bad"]
        assert_exact(a, 2)
        assert_exact(bad, 2)
        assert not a.lock.locked()
    finally:
        for box in boxes:
            box.close()


def test_a_silent_engine_costs_one_timeout_and_is_evicted():
    s = CudaWeightSender("cuda_ipc", "tcp://127.0.0.1:*", ack_timeout=1.0, trainer_factory=StandInTrainerEngine)
    silent = zmq.Context.instance().socket(zmq.DEALER)
    silent.setsockopt(zmq.IDENTITY, b"silent")
    silent.setsockopt(zmq.LINGER, 0)
    silent.connect(s.endpoint)
    silent.send_multipart(encode(Control(kind=ControlKind.READY, payload={"version": -1})))
    a = RecordingTarget()
    box = inbox(s, "a", a)
    wait_until(lambda: "silent" in s.subscribers)
    try:
        t0 = time.monotonic()
        stats = s.publish(weights(1), 1)
        assert "silent" in stats.evicted and time.monotonic() - t0 < 10
        silent.close()
        wait_until(lambda: set(s.subscribers) == {"a"})
        assert s.publish(weights(2), 2).acked == ["a"]
        assert_exact(a, 2)
    finally:
        box.close()
        s.close()


def test_only_cuda_strategies_are_accepted():
    with pytest.raises(ValueError, match="weight_sync.strategy: 'zmq' is not a CUDA strategy"):
        CudaWeightSender("zmq")


def test_versions_must_increase(sender):
    sender.publish(weights(1), 1)
    with pytest.raises(ValueError, match="version: 1 must be greater than the last published 1"):
        sender.publish(weights(1), 1)
    assert sender.due.publishing is None and sender.publish(weights(2), 2).version == 2
