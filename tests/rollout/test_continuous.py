"""GroupBook (peirce.rollout.continuous): the pure bookkeeping of a continuous rollout engine,
fed GenResults by hand (the loop over a stand-in and the real engine are tested in
test_continuous_inproc.py and test_partial_engine.py)."""

from __future__ import annotations

import pytest

from peirce.rollout.continuous import GroupBook
from peirce.rollout.partial import INTERRUPTED
from peirce.rollout.sampling import GenRequest, GenResult, SamplingSpec


def _req(rid: str, n: int = 2, max_tokens: int = 6, seed: int | None = 11) -> GenRequest:
    return GenRequest(request_id=rid, prompt_token_ids=[1, 2, 3], sampling=SamplingSpec(n=n, max_tokens=max_tokens,
                                                                                          seed=seed))


def _res(rid: str, i: int, tokens: list[int], version: int, finish: str | None = "length",
         prompt: list[int] | None = None) -> GenResult:
    return GenResult(request_id=rid, sample_index=i, prompt_token_ids=prompt or [1, 2, 3], response_token_ids=tokens,
                     response_logprobs=[-0.1] * len(tokens), text="", finish_reason=finish, stop_reason=None,
                     policy_version=version)


def _decode(tokens: list[int]) -> str:
    return "".join(chr(96 + t) for t in tokens)


def test_a_group_completes_when_its_last_sample_ends_in_any_order():
    book = GroupBook(max_interrupts=2)
    book.open(_req("a"), version=3, now=0.0, context="ctx-a")
    book.open(_req("b", n=1), version=3, now=0.0)
    assert book.add([_res("a", 1, [1] * 6, 3)]) == []  # one of two samples
    assert book.add([_res("b", 0, [2], 3, "stop")]) == ["b"]  # b ends first though opened later
    assert book.add([_res("a", 0, [3] * 6, 3)]) == ["a"]
    group, results, stats = book.close("a", _decode)
    assert group.context == "ctx-a" and [r.sample_index for r in results] == [0, 1]
    assert [r.policy_version for r in results] == [3, 3] and stats.interrupted_samples == 0
    book.close("b", _decode)
    assert len(book) == 0


def test_cut_samples_are_continued_with_their_tokens_and_version_spans():
    book = GroupBook(max_interrupts=2)
    book.open(_req("a"), version=0, now=0.0)
    assert book.add([_res("a", 0, [1, 1], 0, INTERRUPTED), _res("a", 1, [], 0, INTERRUPTED)]) == []
    assert book.cut == 2
    conts = book.continuations()
    assert book.cut == 0
    by_id = {c.request_id: c for c in conts}
    c0, c1 = by_id["a#0@1"], by_id["a#1@1"]
    assert c0.prompt_token_ids == [1, 2, 3, 1, 1] and c0.sampling.max_tokens == 4 and c0.sampling.n == 1
    assert c1.prompt_token_ids == [1, 2, 3] and c1.sampling.max_tokens == 6
    assert c0.sampling.seed != c1.sampling.seed  # each sample's own seed (seed + i), then derived
    done = book.add([_res("a#0@1", 0, [2] * 4, 1, prompt=c0.prompt_token_ids),
                     _res("a#1@1", 0, [2] * 6, 1, prompt=c1.prompt_token_ids)])
    assert done == ["a"]
    _, results, stats = book.close("a", _decode)
    r0, r1 = results
    assert r0.response_token_ids == [1, 1, 2, 2, 2, 2] and r0.version_segments == [(0, 0), (2, 1)]
    assert r0.policy_version == 0 and r0.prompt_token_ids == [1, 2, 3]  # the oldest part dates it
    assert r1.version_segments == [] and r1.policy_version == 1  # cut before its first token: wholly v1
    assert (stats.interrupted_samples, stats.max_version_span) == (2, 1)


def test_interruptions_are_bounded_per_sample():
    book = GroupBook(max_interrupts=1)
    book.open(_req("a", n=1), version=0, now=0.0)
    assert book.may_interrupt()  # no piece back yet: never cut
    book.add([_res("a", 0, [1], 0, INTERRUPTED)])
    [cont] = book.continuations()
    assert not book.may_interrupt()  # its one interruption used: the swap waits for it
    book.add([_res(cont.request_id, 0, [2] * 5, 1)])
    assert book.may_interrupt()  # finished samples do not hold swaps back
    assert not GroupBook(max_interrupts=0).may_interrupt()  # 0: never cut (drain, then swap)


def test_misuse_is_refused():
    book = GroupBook(max_interrupts=2)
    book.open(_req("a"), version=0, now=0.0)
    with pytest.raises(ValueError, match="already open"):
        book.open(_req("a"), version=0, now=0.0)
    with pytest.raises(KeyError, match="no open group 'x'"):
        book.add([_res("x", 0, [1], 0)])
    with pytest.raises(ValueError, match="not complete"):
        book.close("a", _decode)
    book.add([_res("a", 0, [1] * 6, 0)])
    with pytest.raises(ValueError, match="already finished"):
        book.add([_res("a", 0, [1], 0)])
    with pytest.raises(ValueError, match="max_interrupts"):
        GroupBook(max_interrupts=-1)
