"""Shared-memory weight sync (`weight_sync.strategy: shm`): real ZeroMQ on loopback for the
handshake, real /dev/shm files for the bytes; bit-exact against the state dict, two arenas
used in turn, an arena under a load never repacked, a superseded version refused before
anything is read, hostile references rejected."""

from __future__ import annotations

import os
import threading
import time

import msgspec
import numpy as np
import pytest
import torch

from peirce.config.schema import TrainConfig
from peirce.rollout.weights_inbox import WeightsInbox
from peirce.transport import strategies
from peirce.transport.frames import encode
from peirce.transport.frames import FrameError
from peirce.transport.shm_sync import (AutoWeightPublisher, AutoWeightSubscriber, SharedVersion, ShmWeightPublisher,
                                       ShmWeightSubscriber, VersionSuperseded, boot_id)
from peirce.transport.weight_sync import WeightPublisher, WeightSender
from peirce.transport.wire import WeightBucketMsg, WeightBucketRefMsg


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"embed.weight": torch.randn(64, 32, generator=g).to(torch.bfloat16),
            "layer.0.weight": torch.randn(32, 32, generator=g).to(torch.bfloat16),
            "layer.0.bias": torch.randn(32, generator=g),
            "steps": torch.tensor([seed], dtype=torch.int64)}


def _registered(pub, n: int = 1) -> None:
    deadline = time.monotonic() + 10
    while len(pub.subscribers) < n:
        assert time.monotonic() < deadline, "subscriber never registered"
        time.sleep(0.01)


@pytest.fixture
def pair():
    pub = ShmWeightPublisher("tcp://127.0.0.1:*", bucket_bytes=4096)
    sub = ShmWeightSubscriber(pub.endpoint, name="eng", version=0)
    _registered(pub)
    yield pub, sub
    sub.close()
    pub.close()


def _steps(shared: SharedVersion) -> int:
    """The version's marker tensor, read under the arena's lock as an engine would."""
    with shared.reading():
        return int(dict(shared.tensors())["steps"])


def _receive(sub) -> tuple[int, SharedVersion]:
    got = sub.receive(timeout=10)
    assert got is not None, "no version arrived"
    return got


def _publish(pub, state, version, *subs):
    """Publish while each subscriber receives on its own thread (a publish waits for ACKs).
    Returns (publish stats, what each subscriber received)."""
    got: dict[int, tuple] = {}
    threads = [threading.Thread(target=lambda i=i, s=s: got.__setitem__(i, s.receive(timeout=10))) for i, s in
               enumerate(subs)]
    for t in threads:
        t.start()
    stats = pub.publish(state, version, timeout=10)
    for t in threads:
        t.join(15)
    assert all(got.get(i) is not None for i in range(len(subs))), "a version did not arrive"
    return stats, [got[i] for i in range(len(subs))]


def test_a_version_arrives_bit_exact_and_only_headers_cross_zeromq(pair):
    pub, sub = pair
    state = _state(1)
    stats, [(version, shared)] = _publish(pub, state, 1, sub)
    assert stats.acked == ["eng"] and stats.n_buckets > 1 and stats.bytes_sent == 0
    assert version == 1 and isinstance(shared, SharedVersion)
    with shared.reading():
        got = dict(shared.tensors())
        assert set(got) == set(state) and all(torch.equal(got[k], v) and got[k].dtype == v.dtype
                                              for k, v in state.items())
    # the table the engine's worker reads: absolute offsets into the learner's file, same bytes
    with open(shared.path, "rb") as fh:
        raw = fh.read()
    for name, dtype, shape, offset in shared.table:
        t = state[name]
        n = t.numel() * t.element_size()
        assert raw[offset:offset + n] == t.contiguous().view(torch.uint8).numpy().tobytes(), name
        assert dtype == str(t.dtype).removeprefix("torch.") and shape == list(t.shape)
    # what crossed ZeroMQ: a header and a file reference per bucket, no tensor bytes
    frames = pub._latest.frames
    assert all(len(f) == 1 for f in frames) and sum(len(f[0]) for f in frames) < stats.payload_bytes / 4


def test_two_arenas_in_turn_and_the_latest_is_never_repacked(pair):
    pub, sub = pair
    paths = []
    for v in (1, 2, 3, 4):
        _, [(version, shared)] = _publish(pub, _state(v), v, sub)
        assert version == v and _steps(shared) == v
        paths.append(shared.path)
    assert paths[0] == paths[2] and paths[1] == paths[3] and paths[0] != paths[1]
    assert all(os.path.exists(p) for p in set(paths))
    pub.close()
    assert not any(os.path.exists(p) for p in set(paths)), "arena files left behind"


def test_a_reader_two_versions_behind_finds_its_version_superseded_before_reading_anything(pair):
    pub, sub = pair
    _, [(_, v1)] = _publish(pub, _state(1), 1, sub)
    _, [(_, v2)] = _publish(pub, _state(2), 2, sub)
    _, [(_, v3)] = _publish(pub, _state(3), 3, sub)  # repacks v1's arena: nobody was loading from it
    assert v3.path == v1.path
    with pytest.raises(VersionSuperseded, match="now holds version 3"):
        with v1.reading():
            pytest.fail("read a superseded version")
    assert _steps(v2) == 2 and _steps(v3) == 3


def test_an_arena_an_engine_is_loading_from_is_never_repacked(pair):
    """The learner packs around a load in progress (a third arena) instead of under it; once
    the load is done, the freed arena is used again and the count stays at three."""
    pub, sub = pair
    _, [(_, v1)] = _publish(pub, _state(1), 1, sub)
    _, [(_, v2)] = _publish(pub, _state(2), 2, sub)
    with v1.reading():
        _, [(_, v3)] = _publish(pub, _state(3), 3, sub)
        assert v3.path not in (v1.path, v2.path)
        assert int(dict(v1.tensors())["steps"]) == 1 and dict(v1.tensors())["embed.weight"].equal(
            _state(1)["embed.weight"])
    _, [(_, v4)] = _publish(pub, _state(4), 4, sub)
    assert v4.path in (v1.path, v2.path) and len(pub._arenas) == 3
    assert [_steps(v) for v in (v3, v4)] == [3, 4]


def test_a_publish_waits_for_a_load_to_finish_and_fails_clearly_when_one_never_does():
    pub = ShmWeightPublisher("tcp://127.0.0.1:*", bucket_bytes=4096, ack_timeout=0.5)
    sub = ShmWeightSubscriber(pub.endpoint, name="eng", version=0)
    try:
        _registered(pub)
        got = [_publish(pub, _state(v), v, sub)[1][0][1] for v in (1, 2)]
        with got[0].reading():  # arena A is read, B holds the latest: the third is made
            got.append(_publish(pub, _state(3), 3, sub)[1][0][1])
            with got[1].reading():  # now every arena but the latest is under a load
                with pytest.raises(RuntimeError, match="held all 2 older weight arenas .*a load stuck"):
                    pub.publish(_state(4), 4, timeout=1.0)
                assert pub.latest_version == 3
        # loads finished: the next publish proceeds, into an arena nobody reads
        _, [(version, shared)] = _publish(pub, _state(4), 4, sub)
        assert version == 4 and _steps(shared) == 4 and len(pub._arenas) == 3
        assert _steps(got[2]) == 3
    finally:
        sub.close()
        pub.close()


def test_a_publish_blocked_by_a_load_proceeds_when_the_load_ends(pair):
    pub, sub = pair
    got = [_publish(pub, _state(v), v, sub)[1][0][1] for v in (1, 2)]
    reading = got[0].reading()
    reading.__enter__()
    got.append(_publish(pub, _state(3), 3, sub)[1][0][1])  # third arena
    second = got[1].reading()
    second.__enter__()
    threading.Timer(0.3, lambda: (reading.__exit__(None, None, None), second.__exit__(None, None, None))).start()
    _, [(version, shared)] = _publish(pub, _state(4), 4, sub)  # waits ~0.3 s for an arena
    assert version == 4 and _steps(shared) == 4 and pub.waited_for_readers_s >= 0.2


def test_a_pack_that_fails_midway_cannot_pass_as_a_version(pair, monkeypatch):
    """The stamp reads "none" while bytes change: a reader of the arena's older version is
    refused, not handed half-written bytes."""
    import peirce.transport.shm_sync as shm_sync

    pub, sub = pair
    _, [(_, v1)] = _publish(pub, _state(1), 1, sub)
    _publish(pub, _state(2), 2, sub)

    def failing_pack(state_dict, plan, version, *, out, **kwargs):
        out[0][:] = 7
        raise RuntimeError("learner died mid-pack")

    monkeypatch.setattr(shm_sync, "pack", failing_pack)
    with pytest.raises(RuntimeError, match="mid-pack"):
        pub.publish(_state(3), 3, timeout=1.0)
    with pytest.raises(VersionSuperseded, match="a version being packed"):
        with v1.reading():
            pass
    monkeypatch.undo()
    _, [(version, shared)] = _publish(pub, _state(3), 3, sub)  # the arena's lock was released
    assert version == 3 and _steps(shared) == 3


def test_a_reader_meeting_a_pack_in_progress_is_told_at_once_not_made_to_wait(pair):
    """The learner locks an arena only to repack it: the version a reader came for is gone, and
    a learner stuck mid-pack cannot hang the engines."""
    import fcntl

    pub, sub = pair
    _, [(_, v1)] = _publish(pub, _state(1), 1, sub)
    with open(v1.path, "rb") as learner:
        fcntl.flock(learner.fileno(), fcntl.LOCK_EX)  # as `_arena()` holds it while packing
        t0 = time.monotonic()
        with pytest.raises(VersionSuperseded, match="is repacking"):
            with v1.reading():
                pass
        assert time.monotonic() - t0 < 1.0
    assert _steps(v1) == 1  # unlocked and never repacked: still the version


def test_a_version_whose_file_is_gone_is_superseded_not_a_crash(pair):
    pub, sub = pair
    _, [(_, v1)] = _publish(pub, _state(1), 1, sub)
    pub.close()
    with pytest.raises(VersionSuperseded, match="is gone"):
        with v1.reading():
            pass


def test_a_late_joiner_gets_the_latest_version_from_its_arena(pair):
    pub, sub = pair
    _publish(pub, _state(1), 1, sub)
    _publish(pub, _state(2), 2, sub)
    late = ShmWeightSubscriber(pub.endpoint, name="late", version=0)
    try:
        version, shared = _receive(late)
        assert version == 2 and _steps(shared) == 2
    finally:
        late.close()


@pytest.mark.parametrize("change, reason", [
    ({"boot_id": "another-machine"}, "host"),
    ({"path": "/etc/passwd"}, "path"),
    ({"path": "/dev/shm/../etc/peirce-wsync-1-0123456789ab.bin"}, "path"),
    ({"path": "/dev/shm/peirce-wsync-1-0123456789ab.bin"}, "path"),  # well named, absent
    ({"offset": 1 << 40}, "size"),
    ({"offset": 0}, "size"),  # over the version stamp
])
def test_hostile_or_foreign_references_are_rejected_with_a_reason(pair, change, reason):
    """A reference to another host's file, to a file outside the arena folder (or absent),
    or past the arena's end is counted and dropped through the subscriber's own frame
    handling; nothing is read, and the genuine next version still arrives."""
    pub, sub = pair
    _, [(_, real)] = _publish(pub, _state(1), 1, sub)
    header = msgspec.structs.replace(real.buckets[0][0], version=2)
    ref = msgspec.structs.replace(WeightBucketRefMsg(header=header, path=real.path, offset=real.table[0][3],
                                                     boot_id=boot_id()), **change)
    assert sub._on_bucket(encode(ref)) is None
    assert sub.rejected_frames.get(reason) == 1 and sub.version == 1, sub.rejected_frames
    _, [(version, shared)] = _publish(pub, _state(2), 2, sub)
    assert version == 2 and _steps(shared) == 2


def test_a_zmq_bucket_on_a_shm_subscriber_is_refused_as_a_strategy_mismatch():
    pub = WeightPublisher("tcp://127.0.0.1:*")
    sub = ShmWeightSubscriber(pub.endpoint, name="eng", version=0)
    try:
        _registered(pub)
        pub.publish(_state(1), 1, timeout=1.0)
        assert sub.receive(timeout=1.0) is None
        assert "type" in sub.rejected_frames and sub.version == 0
    finally:
        sub.close()
        pub.close()


def test_the_shm_strategy_builds_its_pair_and_the_inbox_hands_over_a_shared_version():
    cfg = TrainConfig.model_validate({"transport": {"bucket_mb": 0.01}, "weight_sync": {"strategy": "shm"}})
    sync = strategies.get(cfg.weight_sync.strategy)
    sender = sync.sender(cfg, "127.0.0.1", None)
    box = sync.inbox(sender.endpoint, "w0", 0, None, engine=None, on_weights=None)
    try:
        assert isinstance(sender, ShmWeightPublisher) and isinstance(sender, WeightSender)
        assert isinstance(box, WeightsInbox)
        _registered(sender)
        state = _state(7)
        assert sender.publish(state, 1).acked == ["w0"]
        assert box.wait_for(1, 10)
        version, shared = box.take()
        assert version == 1 and isinstance(shared, SharedVersion)
        with shared.reading():
            assert all(torch.equal(t, state[k]) for k, t in shared.tensors())
    finally:
        box.close()
        sender.close()


def test_an_arena_too_big_for_the_shared_memory_folder_fails_clearly_and_leaves_no_file():
    from peirce.transport.shm_files import shm_dir
    from peirce.transport.buckets import BucketPlan
    from peirce.transport.shm_sync import ShmArena

    plan = BucketPlan.from_tensors([("huge.weight", (1 << 50,), "uint8")], bucket_bytes=1 << 20)
    before = set(os.listdir(shm_dir()))
    with pytest.raises(OSError, match="cannot reserve .* MiB .*weight_sync.strategy zmq"):
        ShmArena.create(plan, shm_dir())
    assert set(os.listdir(shm_dir())) - before == set()


# -- auto: references to this machine's subscribers, bytes to the others ------------------------

class _ElsewhereSubscriber(AutoWeightSubscriber):
    """An engine on another host. One machine here: it claims another boot id in READY, which
    is all the publisher decides by (its frames really do go by value over loopback)."""

    def _ready_extra(self) -> dict:
        return {"boot_id": "another-host-boot-id"}


def test_auto_sends_references_here_and_checksummed_bytes_elsewhere_each_bit_exact():
    pub = AutoWeightPublisher("tcp://127.0.0.1:*", bucket_bytes=4096)
    here = AutoWeightSubscriber(pub.endpoint, name="here", version=0)
    away = _ElsewhereSubscriber(pub.endpoint, name="away", version=0)
    try:
        _registered(pub, 2)
        for v in (1, 2, 3):  # three versions: arenas reused while bytes were also framed from them
            state = _state(v)
            stats, [(v_here, shared), (v_away, tensors)] = _publish(pub, state, v, here, away)
            assert sorted(stats.acked) == ["away", "here"] and v_here == v_away == v
            assert stats.bytes_sent == stats.payload_bytes  # only "away" was sent the bytes
            assert isinstance(shared, SharedVersion) and _steps(shared) == v
            got = dict(tensors)
            assert set(got) == set(state) and all(torch.equal(got[k], t) for k, t in state.items())
        assert away.stats[-1].bytes >= sum(t.numel() * t.element_size() for t in state.values())
        assert away.rejected_frames == {} and here.rejected_frames == {}
    finally:
        for s in (here, away):
            s.close()
        pub.close()


def test_auto_verifies_bytes_that_travelled_even_when_a_bucket_claims_no_checksum():
    sub = AutoWeightSubscriber("tcp://127.0.0.1:1", name="eng", version=0)  # no publisher: frames fed directly
    try:
        from peirce.transport.buckets import BucketPlan, pack

        state = _state(1)
        plan = BucketPlan.from_state_dict(state, 4096)
        header, buf = pack(state, plan, 1)[0]
        for forged in (msgspec.structs.replace(header, checksum_algo="none", checksum=0),
                       msgspec.structs.replace(header, checksum=header.checksum ^ 1)):
            assert sub._on_bucket(encode(WeightBucketMsg(header=forged, data=buf))) is None
        assert sub.rejected_frames == {"checksum": 2} and sub.version == 0
    finally:
        sub.close()


def test_auto_refuses_a_version_sent_partly_by_reference_and_partly_by_value():
    sub = AutoWeightSubscriber("tcp://127.0.0.1:1", name="eng", version=0)
    try:
        header = _state_header()
        ref = WeightBucketRefMsg(header=header, path="/dev/shm/x", offset=64, boot_id=boot_id())
        with pytest.raises(FrameError, match="some buckets by reference, some by value"):
            sub._complete(1, [(header, None, ref), (header, None, WeightBucketMsg(header=header, data=np.zeros(header.nbytes, np.uint8)))])
    finally:
        sub.close()


def _state_header():
    from peirce.transport.buckets import BucketPlan, pack

    state = _state(1)
    return pack(state, BucketPlan.from_state_dict(state, 1 << 20), 1)[0][0]


def test_a_plain_shm_publisher_names_a_subscriber_on_another_host_when_it_registers(caplog):
    pub = ShmWeightPublisher("tcp://127.0.0.1:*", bucket_bytes=4096)
    away = _ElsewhereSubscriber(pub.endpoint, name="away", version=0)
    try:
        with caplog.at_level("WARNING", logger="peirce.transport.shm_sync"):
            _registered(pub)
            deadline = time.monotonic() + 5
            while "another host" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
        assert "'away'" in caplog.text or "b'away'" in caplog.text
        assert "use auto" in caplog.text
    finally:
        away.close()
        pub.close()


def test_the_auto_strategy_builds_its_pair():
    cfg = TrainConfig.model_validate({"transport": {"bucket_mb": 0.01}})
    assert cfg.weight_sync.strategy == "auto"
    sync = strategies.get(cfg.weight_sync.strategy)
    sender = sync.sender(cfg, "127.0.0.1", None)
    box = sync.inbox(sender.endpoint, "w0", 0, None, engine=None, on_weights=None)
    try:
        assert isinstance(sender, AutoWeightPublisher) and box._subscriber is AutoWeightSubscriber
        _registered(sender)
        assert sender.publish(_state(5), 1).acked == ["w0"]
        assert box.wait_for(1, 10)
        version, shared = box.take()
        assert version == 1 and isinstance(shared, SharedVersion) and _steps(shared) == 5
    finally:
        box.close()
        sender.close()
