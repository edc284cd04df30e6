"""Partial rollouts (peirce.rollout.partial) without vLLM: segment bookkeeping, stop strings
across an interruption, continuation requests, the bounded interrupt loop.

The loop runs over `StandInEngine` (tests/inproc_harness.py; vLLM takes minutes to start):
one token per sample per decode step, each token `ord("a") + version`, so a test reads off
which weights wrote every token. The slow test in test_partial_engine.py runs the real engine.
"""

from __future__ import annotations

import pytest
import torch

from inproc_harness import StandInEngine
from peirce.rollout.partial import (INTERRUPTED, SampleProgress, continuation_seed, cut_at_stop, generate_partial,
                                    merge_segments, sample_seed, wire_segments)
from peirce.rollout.sampling import GenRequest, GenResult, SamplingSpec
from peirce.transport.wire import RolloutSample


def _piece(tokens: list[int], version: int, finish: str | None, text: str = "") -> GenResult:
    return GenResult(request_id="r", sample_index=1, prompt_token_ids=[7, 8], response_token_ids=tokens,
                     response_logprobs=[-0.5] * len(tokens), text=text, finish_reason=finish, stop_reason=None,
                     policy_version=version)


def _chars(ids: list[int]) -> str:
    return "".join(map(chr, ids))


def test_segments_merge_runs_and_replace_empty_ones():
    assert merge_segments([], 0, 3) == [(0, 3)]
    assert merge_segments([(0, 3)], 5, 4) == [(0, 3), (5, 4)]
    assert merge_segments([(0, 3)], 5, 3) == [(0, 3)]  # same weights: one run
    assert merge_segments([(0, 3), (5, 4)], 5, 6) == [(0, 3), (5, 6)]  # the v4 run wrote nothing
    with pytest.raises(ValueError, match="versions only go up"):
        merge_segments([(0, 3)], 2, 1)
    with pytest.raises(ValueError, match="start 1 < previous start 2"):
        merge_segments([(0, 3), (2, 4)], 1, 5)
    assert wire_segments([(0, 3)]) == [] and wire_segments([(0, 3), (5, 4)]) == [(0, 3), (5, 4)]


def test_continued_sample_concatenates_tokens_logprobs_and_versions():
    p = SampleProgress("r", 1, [7, 8], SamplingSpec(n=1, max_tokens=10, min_tokens=4, seed=sample_seed(100, 1)))
    p.add(_piece([65, 66, 67], 2, INTERRUPTED, "ABC"))
    assert not p.finished and p.tokens == [65, 66, 67]
    cont = p.continuation("r#1@1")
    assert cont.prompt_token_ids == [7, 8, 65, 66, 67]
    assert (cont.sampling.n, cont.sampling.max_tokens, cont.sampling.min_tokens) == (1, 7, 1)
    assert cont.sampling.seed == continuation_seed(101, 3) != 101  # a new stream, derived, reproducible
    p.add(_piece([68, 69], 3, "length"))
    r = p.result(_chars, fallback_version=0)
    assert r.response_token_ids == [65, 66, 67, 68, 69] and r.text == "ABCDE"
    assert r.policy_version == 2 and r.version_segments == [(0, 2), (3, 3)] and r.finish_reason == "length"
    wire = RolloutSample(task_id="t", family="f", level=1, group_id="g", sample_index=1,
                         prompt_token_ids=r.prompt_token_ids, response_token_ids=r.response_token_ids,
                         response_logprobs=r.response_logprobs, policy_version=r.policy_version,
                         version_segments=r.version_segments)
    assert wire.token_versions().tolist() == [2, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="already finished"):
        p.add(_piece([1], 4, "stop"))


def test_interrupted_before_its_first_token_is_wholly_the_new_version():
    p = SampleProgress("r", 0, [7], SamplingSpec(max_tokens=4))
    p.add(_piece([], 1, INTERRUPTED))
    p.add(_piece([65, 66], 2, "stop", "AB"))
    r = p.result(_chars, fallback_version=1)
    assert r.policy_version == 2 and r.version_segments == [] and r.text == "AB"


def test_stop_string_spanning_the_interruption_cuts_the_sample():
    assert cut_at_stop([ord(c) for c in "xx</a>yy"], ("</a>",), _chars) == (6, "xx", "</a>")
    assert cut_at_stop([ord(c) for c in "xxyy"], ("</a>",), _chars) is None
    p = SampleProgress("r", 0, [7], SamplingSpec(max_tokens=20, stop=("</a>",)))
    p.add(_piece([ord(c) for c in "ok</"], 0, INTERRUPTED, "ok</"))
    p.add(_piece([ord(c) for c in "a>more"], 1, "length"))  # neither piece saw "</a>" whole
    r = p.result(_chars, fallback_version=0)
    assert r.text == "ok" and r.finish_reason == "stop" and r.stop_reason == "</a>"
    assert _chars(r.response_token_ids) == "ok</a>" and len(r.response_logprobs) == 6
    assert r.version_segments == [(0, 0), (4, 1)]


def _loaded(engine: StandInEngine):
    """A swap that loads version policy_version + 1, as the inbox would deliver it."""
    def swap() -> None:
        v = engine.policy_version + 1
        engine.load_weights([("w", torch.full((4,), float(v)))], version=v)
    return swap


def test_generate_partial_continues_every_sample_under_new_weights():
    engine = StandInEngine(version=5)
    engine.step_hook = lambda step: None
    reqs = [GenRequest(request_id="a", prompt="pa", sampling=SamplingSpec(n=3, max_tokens=6)),
            GenRequest(request_id="b", prompt="pb", sampling=SamplingSpec(n=1, max_tokens=2))]
    steps = iter(range(1000))
    newer = lambda: next(steps) == 3  # noqa: E731  new weights arrive before the 4th decode step
    out, stats = generate_partial(engine, reqs, newer=newer, swap=_loaded(engine), max_interrupts=2)
    assert [(r.request_id, r.sample_index) for r in out] == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    for r in out[:3]:
        assert _chars(r.response_token_ids) == "fffggg"  # 3 tokens by v5 ('a'+5), 3 by v6
        assert r.response_logprobs == [pytest.approx(-0.6)] * 3 + [pytest.approx(-0.7)] * 3
        assert (r.policy_version, r.version_segments, r.finish_reason) == (5, [(0, 5), (3, 6)], "length")
    assert out[3].response_token_ids == [ord("f")] * 2 and out[3].version_segments == []  # done before
    assert (stats.interrupts, stats.interrupted_samples, stats.continuations, stats.max_version_span) == (1, 3, 3, 1)
    assert engine.loaded == [6]


def test_interruptions_are_bounded_per_batch_and_no_sample_is_lost():
    engine = StandInEngine(version=0)
    req = GenRequest(request_id="a", prompt="p", sampling=SamplingSpec(n=2, max_tokens=8))
    tick = iter(range(1000))
    newer = lambda: next(tick) % 2 == 1  # noqa: E731  a learner faster than one decode step
    out, stats = generate_partial(engine, [req], newer=newer, swap=_loaded(engine), max_interrupts=3)
    assert stats.interrupts == 3 and engine.loaded == [1, 2, 3]  # the last round ran to the end
    for r in out:
        assert len(r.response_token_ids) == 8 and r.finish_reason == "length"
        assert [v for _, v in r.version_segments] == [0, 1, 2, 3]
        versions = [t - ord("a") for t in r.response_token_ids]
        assert versions == sorted(versions)
    none, stats0 = generate_partial(StandInEngine(), [req], newer=lambda: True, swap=lambda: None, max_interrupts=0)
    assert stats0.interrupts == 0 and all(r.version_segments == [] for r in none)  # 0: never interrupted
    with pytest.raises(ValueError, match="max_interrupts=-1"):
        generate_partial(engine, [req], newer=newer, swap=lambda: None, max_interrupts=-1)


def test_seeds_follow_vllm_parallel_sampling():
    assert sample_seed(None, 3) is None and sample_seed(10, 3) == 13
    assert continuation_seed(None, 4) is None
    assert len({continuation_seed(13, k) for k in range(50)}) == 50
