"""WorkerPool over thread-backed rollout workers (ThreadCalls, tests/inproc_harness.py):
resized while items flow, and a worker whose engine dies mid-item is buried, replaced,
and its items served by someone else, exactly once.

The workers are real RolloutLoops against a real WorkDispatcher (ZeroMQ inproc) with a
real weight publisher; only vLLM stands in (StandInEngine: too slow to start here). The
slow tests in test_worker_pool.py and test_chaos.py kill real Ray actors.
"""

from __future__ import annotations

import pytest

from inproc_harness import InprocRun, inproc_topology, pump_until, task_items
from peirce.config import TrainConfig, load_config
from peirce.config.profiles import SMOKE_TRAIN, as_overrides
from peirce.trainer.planner import Delivered, read_result
from peirce.transport.wire import RolloutSample

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def run(tmp_path):
    cfg = load_config(TrainConfig, None, as_overrides({**SMOKE_TRAIN, "run_dir": str(tmp_path / "run"),
                                                       "rollout.workers": 2}))
    run = inproc_topology(cfg, ping_every_s=0.05)
    yield run
    run.topology.shutdown()


def _settle(run: InprocRun, n: int) -> None:
    """Reap until `n` rollout workers answered a ping and registered, and no drain is open."""
    pool, d = run.topology.rollout_pool, run.topology.rollout_dispatch
    pump_until(d, lambda _: pool.size == n and set(pool.workers) <= pool._started and not pool._draining
               and d.live_workers() == n, also=pool.reap)


def _served(run: InprocRun) -> dict[str, list[str]]:
    return {wid: [rid for rid, _ in e.served] for wid, e in run.engines.items()}


def test_resizing_at_runtime_serves_every_item_once(run):
    pool, d = run.topology.rollout_pool, run.topology.rollout_dispatch
    _settle(run, 2)
    pool.resize(3)
    _settle(run, 3)
    first = task_items(6, "a")
    for item_id, payload in first.items():
        d.submit(item_id, payload)
    results = pump_until(d, lambda r: len(r) == 6, also=pool.reap)
    assert all(_served(run)[wid] for wid in pool.workers)  # 2 credits each: all three took work
    pool.resize(1)  # the two newest drain: BYE, their loops end
    _settle(run, 1)
    assert list(pool.workers) == ["rollout-0"] and not run.workers["rollout-2"].thread.thread.is_alive()
    second = task_items(4, "b")
    for item_id, payload in second.items():
        d.submit(item_id, payload)
    pump_until(d, lambda r: len(r) == 10, into=results, also=pool.reap)
    assert sorted(results) == sorted([*first, *second]) and d.in_flight() == 0
    assert all(isinstance(read_result(p, RolloutSample), Delivered) for p in results.values())
    assert set(_served(run)["rollout-0"]) >= set(second) and pool.deaths == 0


def test_a_worker_dead_mid_item_is_replaced_and_its_items_served_once(run):
    pool, d = run.topology.rollout_pool, run.topology.rollout_dispatch
    _settle(run, 2)
    victim = run.workers["rollout-0"]
    victim.engine.running.clear()  # its next generate call hangs, holding its items
    items = task_items(4)
    for item_id, payload in items.items():
        d.submit(item_id, payload)
    results = pump_until(d, lambda r: len(r) == 2 and victim.engine.busy.is_set())
    held = set(d.workers[b"rollout-0"].outstanding)
    assert held == set(items) - set(results)
    victim.engine.dead = True  # as if vLLM's engine process exited: alive() raises from now on
    pump_until(d, lambda r: len(r) == 4, into=results, also=pool.reap)
    assert sorted(results) == sorted(items) and pool.deaths == 1
    assert "rollout-0" not in pool.workers and pool.size == 2 and "rollout-2" in pool.workers
    assert not held & set(_served(run)["rollout-0"])  # the dead one finished none of them
    # The hung loop wakes up and answers late: refused, never delivered a second time.
    victim.loop.stop_event.set()
    victim.engine.running.set()
    late = pump_until(d, lambda _: d.rejected.as_dict().get("unknown_peer", 0) >= 1, also=pool.reap)
    victim.drain()
    assert late == {} and d.in_flight() == 0
