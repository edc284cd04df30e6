"""Continuous rollout (`rollout.continuous`) through the real RolloutLoop, WorkDispatcher,
WeightPublisher and WeightsInbox (ZeroMQ inproc), with StandInEngine's stream for vLLM's
(tests/inproc_harness.py: vLLM takes minutes to start; test_partial_engine.py runs the
real EngineStream). The stand-in writes `ord("a") + version` as each token, one per live
sample per step, so a sample shows which weights wrote it.
"""

from __future__ import annotations

import threading

import pytest

from inproc_harness import (StandInEngine, StandInLearner, ThreadRolloutWorker, publish_mid_generation,
                            pump_until, serve_items, serve_loop, task_items)
from peirce.rollout.weights_inbox import WeightsInbox
from peirce.rollout.worker import RolloutLoop
from peirce.transport.dispatch import WorkDispatcher, inproc_endpoint
from peirce.transport.groups import unpack_messages
from peirce.transport.weight_sync import WeightPublisher
from peirce.transport.wire import RequestSampling, RolloutSample


def _items(lengths: dict[str, int], n_samples: int = 2) -> dict[str, list[bytes]]:
    """One item per name, each with its own max_tokens (the stand-in writes exactly that many)."""
    out = {}
    for name, length in lengths.items():
        [(_, payload)] = task_items(1, prefix=name, n_samples=n_samples,
                                    sampling=RequestSampling(max_tokens=length)).items()
        out[name] = payload
    return out


def _samples(payload: list) -> list[RolloutSample]:
    samples = unpack_messages(payload)
    assert all(isinstance(s, RolloutSample) for s in samples)
    return samples


@pytest.mark.timeout(60)
def test_a_short_group_is_answered_while_a_long_one_decodes_and_a_later_one_joins_it():
    learner = StandInLearner()
    dispatcher = WorkDispatcher(endpoint=inproc_endpoint("continuous-order"))
    engine = StandInEngine(step_s=0.01)
    worker = ThreadRolloutWorker(engine, dispatcher.endpoint, learner.weight_endpoint(), "rollout-c",
                                 prompts_per_step=3, continuous=True)
    items = _items({"long": 60, "short": 3, "late": 3})
    try:
        for name in ("long", "short"):
            dispatcher.submit(name, items[name])
        results = pump_until(dispatcher, lambda r: "short" in r)
        assert "long" not in results  # a batch would have held it until the long one ended
        dispatcher.submit("late", items["late"])
        pump_until(dispatcher, lambda r: "late" in r, into=results)
        assert "long" not in results  # "late" started and ended while "long" decoded
        pump_until(dispatcher, lambda r: "long" in r, into=results)
    finally:
        worker.drain()
        learner.close()
    for name, length in (("long", 60), ("short", 3), ("late", 3)):
        samples = _samples(results[name])
        assert [s.sample_index for s in samples] == [0, 1] and {s.group_id for s in samples} == {f"{name}0"}
        assert all(len(s.response_token_ids) == length and s.finish_reason == "length" for s in samples)
    sizes = engine.last_stream.batch_sizes
    assert max(sizes) == 4 and sizes.count(4) >= 2  # two groups of two samples decoding together
    assert worker.loop.generated_groups == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("interrupt", [True, False], ids=["cut-and-continue", "drain-then-swap"])
def test_new_weights_mid_stream(interrupt):
    """A version published at decode step 4 while two groups (6 and 12 tokens) decode, two
    more waiting for credit. Cut-and-continue: the live samples carry on under it, each
    token written by the version its segment says. Drain-then-swap: no group starts while
    the new version waits, the live ones end under the old one, the rest run under the new."""
    learner = StandInLearner()
    dispatcher = WorkDispatcher(endpoint=inproc_endpoint(f"continuous-swap-{interrupt}"))
    engine = StandInEngine(step_s=0.02)
    worker = ThreadRolloutWorker(engine, dispatcher.endpoint, learner.weight_endpoint(), "rollout-s",
                                 prompts_per_step=2, continuous=True, interrupt_on_new_weights=interrupt)
    published = publish_mid_generation(engine, learner, worker, at_step=4)
    lengths = {"t0": 6, "t1": 12, "t2": 5, "t3": 5}
    results = serve_items(dispatcher, _items(lengths), worker, learner)
    assert published.is_set() and engine.loaded == [1]
    served = dict(engine.served)
    for name, length in lengths.items():
        for s in _samples(results[name]):
            assert len(s.response_token_ids) == length and s.finish_reason == "length"
            assert (s.response_token_ids - ord("a")).tolist() == s.token_versions().tolist()
    spans = {name: [s.version_segments for s in _samples(results[name])] for name in lengths}
    if interrupt:
        assert engine.interrupted_calls == 1
        for name in ("t0", "t1"):  # live at step 4: started under 0, continued under 1
            assert all(seg and seg[0][1] == 0 and seg[-1][1] == 1 for seg in spans[name]), spans
        assert worker.loop.partial.interrupts == 1 and worker.loop.partial.interrupted_samples == 4
    else:
        assert engine.interrupted_calls == 0 and not any(seg for segs in spans.values() for seg in segs)
        assert (served["t0"], served["t1"]) == (0, 0)  # ended under the weights they started with
        assert (served["t2"], served["t3"]) == (1, 1)  # held back until the swap
        for name in ("t0", "t1"):
            assert {s.policy_version for s in _samples(results[name])} == {0}


@pytest.mark.timeout(60)
def test_bad_items_are_answered_one_by_one_and_the_rest_generated():
    from peirce.trainer.planner import WorkerError, read_result
    from peirce.transport.wire import Msg

    good = _items({"good": 4, "refused": 4, "future": 4})
    future = task_items(1, prefix="future", policy_version_at_dispatch=10**9)
    items = {"good": good["good"], "refused": good["refused"], "garbage": [b"\xc1"], "future": future["future0"]}
    loop, results, alive = serve_loop(StandInEngine(refuse=frozenset({"refused"}), step_s=0.005), items,
                                  timeout_s=20, continuous=True, version_wait_s=0.5)
    assert alive and set(results) == set(items)
    reasons = {k: getattr(read_result(v, Msg), "reason", None) for k, v in results.items()}
    assert reasons == {"good": None, "refused": "unservable", "garbage": "malformed", "future": "version"}
    assert isinstance(read_result(results["refused"], Msg), WorkerError)
    assert loop.rejects.as_dict() == {"unservable": 1, "malformed": 1, "version": 1}
    assert loop.generated_groups == 1


@pytest.mark.timeout(60)
def test_a_stop_finishes_the_live_groups_and_answers_them():
    engine = StandInEngine(step_s=0.01)
    d = WorkDispatcher()
    pub = WeightPublisher()
    inbox = WeightsInbox(pub.endpoint, "rollout-stop", version=0)
    loop = RolloutLoop(engine, d.endpoint, inbox, worker_id="rollout-stop", prompt_style="reference",
                       prompts_per_step=1, catch_up_s=0.1, continuous=True)
    started = threading.Event()
    engine.step_hook = lambda step: started.set()
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        d.submit("long", _items({"long": 30})["long"])
        results = pump_until(d, lambda r: started.is_set(), timeout_s=10)  # the dispatcher moves on pumps
        loop.stop_event.set()  # mid-decode, as a drain does
        pump_until(d, lambda r: "long" in r, into=results, timeout_s=10)
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        inbox.close()
        pub.close()
        d.close()
    assert [len(s.response_token_ids) for s in _samples(results["long"])] == [30, 30]
