"""Staleness admission control: formula, hard bound under threads, s = 0 is synchronous, resume."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest

from peirce.rollout.staleness import StalenessController, sample_staleness


class FakeVersion:
    def __init__(self, v: int = 0) -> None:
        self.v = v

    def get_version(self) -> int:
        return self.v


def test_capacity_formula_and_counts():
    pv = FakeVersion()
    c = StalenessController(max_staleness=2, prompts_per_step=4, version_provider=pv)
    assert c.capacity() == (2 + 0 + 1) * 4
    assert c.try_admit(10)
    assert c.capacity() == 2
    assert not c.try_admit(3)
    c.on_accepted(0, 4)
    c.on_rejected(0, 1)  # failed rollout returns capacity
    assert c.capacity() == 3
    c.on_consumed(4)
    assert c.capacity() == 3  # consumed still counts until the version advances
    pv.v = 1
    assert c.capacity() == 7
    assert c.counts() == {"running": 5, "accepted": 0, "consumed": 4, "submitted_total": 10,
                          "rejected_total": 1, "discarded_total": 0}


def test_max_concurrent_caps_running():
    c = StalenessController(3, 8, FakeVersion(), max_concurrent=5)
    assert c.capacity() == 5
    assert c.try_admit(5) and not c.try_admit(1)
    c.on_accepted(0, 2)
    assert c.capacity() == 2


def test_sync_mode_is_lockstep():
    pv = FakeVersion()
    B = 4
    c = StalenessController(0, B, pv)
    for step in range(5):
        admitted = 0
        while c.try_admit(1):
            admitted += 1
        assert admitted == B  # exactly one batch may be generated per version
        assert not c.may_train()
        c.on_accepted(pv.v, B)
        assert c.may_train()
        assert c.on_consumed(B) == [0] * B
        assert c.capacity() == 0  # nothing starts until the step has published a new version
        pv.v += 1
    assert c.stats.max == 0 and c.stats.count == 5 * B


def test_gate_blocks_a_slow_rollout_from_going_stale():
    """B = 1, s = 1: without the gate, rollout `a` could be overtaken forever."""
    pv = FakeVersion()
    c = StalenessController(1, 1, pv)
    assert c.try_admit(2)  # a and b at version 0
    c.on_accepted(0)  # b finishes
    assert c.may_train()  # a (version 0) is still within bound after the step
    c.on_consumed(1)
    pv.v = 1
    assert c.try_admit(1)  # c at version 1
    c.on_accepted(1)
    assert c.min_version_after_step() == 1
    assert not c.may_train()  # training c would leave a (version 0) at staleness 2
    c.on_rejected(0)  # abort a
    assert c.may_train()


def test_gate_blocks_leftover_old_accepted_samples():
    pv = FakeVersion()
    c = StalenessController(1, 2, pv)
    assert c.try_admit(4)
    c.on_accepted(0, 4)
    c.on_consumed(1)  # a short step (fewer than B samples) leaves 3 from version 0
    pv.v = 1
    assert not c.may_train()  # a batch of 2 would leave one version-0 sample at staleness 2
    c.on_discarded(0, 1)
    assert c.may_train()


def test_callbacks_reject_inconsistent_events():
    c = StalenessController(1, 2, FakeVersion(3))
    with pytest.raises(ValueError, match="version 3"):
        c.on_accepted(3)
    assert c.try_admit(1)
    with pytest.raises(ValueError, match=r"version 2.*running by version: \{3: 1\}"):
        c.on_accepted(2)
    with pytest.raises(ValueError, match="only 0 samples are accepted"):
        c.on_consumed(1)
    with pytest.raises(ValueError, match="<= the current policy version 3"):
        c.try_admit(1, version=4)
    with pytest.raises(ValueError, match="max_staleness must be an integer >= 0, got -1"):
        StalenessController(-1, 2, FakeVersion())
    with pytest.raises(ValueError, match="prompts_per_step must be an integer >= 1, got 0"):
        StalenessController(0, 0, FakeVersion())
    with pytest.raises(ValueError, match="newer than train_version"):
        sample_staleness(1, 2)


@pytest.mark.parametrize("max_staleness, seed", [(0, 0), (1, 1), (2, 2), (4, 3)])
def test_bound_holds_with_threads_and_random_durations(max_staleness, seed):
    """Real threads: rollout workers with heavy-tailed durations and failures, a learner that
    takes the oldest accepted samples when the gate allows. Staleness is measured
    independently of the controller's own bookkeeping."""
    B, steps, workers = 4, 12, 6
    pv = FakeVersion()
    c = StalenessController(max_staleness, B, pv)
    buf: list[int] = []  # versions of accepted samples (the "replay buffer")
    buf_lock = threading.Lock()
    stop = threading.Event()
    measured: list[int] = []
    gen_versions_at_start: list[tuple[int, int]] = []  # (gen version, learner version at start)

    def worker(wid: int) -> None:
        rng = random.Random(seed * 100 + wid)
        while not stop.is_set():
            v = pv.get_version()
            if not c.try_admit(1, version=v):
                time.sleep(0.0005)
                continue
            gen_versions_at_start.append((v, pv.get_version()))
            time.sleep(0.02 if rng.random() < 0.1 else rng.uniform(0, 0.003))
            if rng.random() < 0.05:
                c.on_rejected(v)
                continue
            with buf_lock:
                buf.append(v)
                c.on_accepted(v)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    rng = random.Random(seed)
    deadline = time.monotonic() + 20
    try:
        for _ in range(steps):
            while not c.may_train():
                assert time.monotonic() < deadline, f"deadlock: {c.counts()}"
                time.sleep(0.0005)
            with buf_lock:
                buf.sort()
                batch, buf[:] = buf[:B], buf[B:]
                c.on_consumed(B, versions=batch)
            measured += [pv.get_version() - g for g in batch]
            time.sleep(rng.uniform(0, 0.003))  # the optimizer step
            pv.v += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(measured) == steps * B
    assert max(measured) <= max_staleness
    assert c.stats.max == max(measured) and c.stats.count == steps * B
    if max_staleness == 0:
        assert all(g == v for g, v in gen_versions_at_start)
    else:
        assert max(measured) >= 1  # the run really was asynchronous


def _simulate(c: StalenessController, pv: FakeVersion, rng: random.Random, n_events: int,
              log: list, running: list[int]) -> None:
    """Single-threaded random event stream; logs every decision so two runs can be compared.
    `running` holds the versions of in-flight rollouts (owned by the caller, like an engine)."""
    for _ in range(n_events):
        op = rng.random()
        if op < 0.4:
            ok = c.try_admit(1)
            if ok:
                running.append(pv.v)
            log.append(("admit", ok, c.capacity()))
        elif op < 0.75 and running:
            v = running.pop(rng.randrange(len(running)))
            (c.on_rejected if rng.random() < 0.1 else c.on_accepted)(v)
            log.append(("done", v, c.capacity()))
        elif c.may_train():
            log.append(("train", tuple(c.on_consumed(c.prompts_per_step)), pv.v))
            pv.v += 1


def test_resume_reproduces_the_uninterrupted_run():
    pv = FakeVersion()
    ref = StalenessController(2, 3, pv)
    ref_log: list = []
    _simulate(ref, pv, random.Random(7), 600, ref_log, [])

    pv = FakeVersion()
    rng, running, log = random.Random(7), [], []
    first = StalenessController(2, 3, pv)
    done = 0
    while done < 300 or not running or not first.counts()["accepted"]:  # checkpoint mid-flight
        _simulate(first, pv, rng, 1, log, running)
        done += 1
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    second = StalenessController(2, 3, pv)
    second.load_state_dict(state, drop_running=False)
    _simulate(second, pv, rng, 600 - done, log, running)
    assert log == ref_log
    assert second.state_dict() == ref.state_dict()
    assert any(e[0] == "train" for e in log[len(log) // 2:])  # training happened after the resume


def test_resume_drops_in_flight_rollouts_by_default():
    pv = FakeVersion()
    c = StalenessController(1, 2, pv)
    assert c.try_admit(4)
    c.on_accepted(0, 1)
    full = c.capacity()
    c2 = StalenessController(1, 2, pv)
    c2.load_state_dict(c.state_dict())
    assert c2.counts()["running"] == 0 and c2.counts()["rejected_total"] == 3
    assert c2.capacity() == full + 3
    with pytest.raises(ValueError, match="prompts_per_step=2 does not match"):
        StalenessController(1, 4, pv).load_state_dict(c.state_dict())


def test_a_checkpoint_from_before_the_rename_still_loads():
    pv = FakeVersion()
    c = StalenessController(1, 2, pv)
    assert c.try_admit(2)
    old = c.state_dict()
    old["batch_size_samples"] = old.pop("prompts_per_step")  # the key checkpoints carried before
    c2 = StalenessController(1, 2, pv)
    c2.load_state_dict(old)
    assert c2.counts()["rejected_total"] == 2
    with pytest.raises(ValueError, match="prompts_per_step=2 does not match"):
        StalenessController(1, 4, pv).load_state_dict(old)
