"""Partial rollouts through the real RolloutLoop, WorkDispatcher, WeightPublisher and
WeightsInbox (ZeroMQ inproc), with `StandInEngine` for vLLM (tests/inproc_harness.py:
vLLM takes minutes to start; test_partial_engine.py runs the real one). The stand-in
writes `ord("a") + version` as each token, so a sample shows which weights wrote it.

A new version is published while the batch is mid-generation: every sample comes back
whole (none lost), continued under the new version, with its version span recorded.
"""

from __future__ import annotations

from inproc_harness import (StandInEngine, StandInLearner, ThreadRolloutWorker, publish_mid_generation,
                            serve_items, task_items)
from peirce.transport.dispatch import WorkDispatcher, inproc_endpoint
from peirce.transport.groups import unpack_messages
from peirce.transport.wire import RequestSampling, RolloutSample


def test_new_weights_mid_batch_continue_every_sample_and_record_spans():
    learner = StandInLearner()
    dispatcher = WorkDispatcher(endpoint=inproc_endpoint("partial-rollout"))
    engine = StandInEngine(step_s=0.001)
    worker = ThreadRolloutWorker(engine, dispatcher.endpoint, learner.weight_endpoint(), "rollout-p",
                                 prompts_per_step=3, interrupt_on_new_weights=True, max_interrupts=2)
    published = publish_mid_generation(engine, learner, worker, at_step=4)
    items = task_items(3, prefix="p", n_samples=4, sampling=RequestSampling(max_tokens=10))
    results = serve_items(dispatcher, items, worker, learner)
    assert published.is_set() and engine.loaded == [1] and engine.interrupted_calls == 1
    continued = 0
    for item_id, payload in results.items():
        samples = unpack_messages(payload)
        assert [s.sample_index for s in samples] == [0, 1, 2, 3]  # no sample lost
        for s in samples:
            assert isinstance(s, RolloutSample) and s.group_id == item_id
            assert len(s.response_token_ids) == 10 and s.finish_reason == "length"
            assert (s.response_token_ids - ord("a")).tolist() == s.token_versions().tolist()
            if s.version_segments:  # in the batch that was interrupted
                assert (s.policy_version, s.version_segments, s.completion) == (0, [(0, 0), (4, 1)], "aaaabbbbbb")
                continued += 1
            else:  # the dispatcher handed it over after the swap: wholly version 1
                assert (s.policy_version, s.completion) == (1, "b" * 10)
    # the first batch holds at least one item (all three when they arrive together)
    assert continued >= 4 and worker.loop.partial.interrupted_samples == worker.loop.partial.continuations == continued
