"""collate / micro-batching: layout, alignment, validation, packing invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peirce.learner.batch import BatchError, Sample, collate, micro_batches, plan_micro_batches


def _samples():
    return [
        Sample([1, 2, 3], [10, 11], 1.0, [-0.5, -0.25], policy_version=3),
        Sample([4], [12, 13, 14, 15], [0.1, 0.2, 0.3, 0.4], [-1.0, -2.0, -3.0, -4.0], policy_version=5),
    ]


def test_collate_layout_and_alignment():
    b = collate(_samples(), pad_token_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3, 10, 11], [4, 12, 13, 14, 15]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]
    assert b.response_ids.tolist() == [[10, 11, 0, 0], [12, 13, 14, 15]]
    assert b.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    # the token at response_index[i, j] + 1 is response token j
    for i in range(2):
        for j in range(int(b.response_lengths[i])):
            assert b.input_ids[i, b.response_index[i, j] + 1] == b.response_ids[i, j]
    torch.testing.assert_close(b.advantages, torch.tensor([[1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]]))
    assert b.rollout_logprobs.tolist() == [[-0.5, -0.25, 0, 0], [-1, -2, -3, -4]]
    assert b.policy_versions.tolist() == [3, 5]
    assert b.num_response_tokens == 6


def test_collate_right_pads_shorter_rows():
    b = collate([Sample([1, 2], [3], 1.0), Sample([1, 2, 3, 4], [5, 6, 7], -1.0)], pad_token_id=9)
    assert b.input_ids[0].tolist() == [1, 2, 3, 9, 9, 9, 9]
    assert b.attention_mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert b.position_ids[0].tolist() == [0, 1, 2, 0, 0, 0, 0]
    assert b.response_mask[0].tolist() == [1, 0, 0]
    assert b.rollout_logprobs is None


@pytest.mark.parametrize(
    "samples, match",
    [
        ([], "must not be empty"),
        ([Sample([], [1], 1.0)], "sample 0: prompt_token_ids is empty"),
        ([Sample([1], [], 1.0)], "sample 0: response_token_ids is empty"),
        ([Sample([1], [2], 1.0), Sample([1], [2, 3], [1.0])], "sample 1: advantage has 1 values but"),
        ([Sample([1], [2], float("nan"))], "sample 0: advantage must be finite"),
        ([Sample([1], [-2], 1.0)], "sample 0: response_token_ids must be in"),
        ([Sample([1], [2], 1.0, [-1.0]), Sample([1], [2], 1.0)], "sample 1: rollout_logprobs is None"),
        ([Sample([1], [2, 3], 1.0, [-1.0])], "sample 0: rollout_logprobs has 1 values"),
    ],
)
def test_collate_rejects_bad_samples(samples, match):
    with pytest.raises(BatchError, match=match):
        collate(samples)


def test_collate_checks_vocab_and_length():
    with pytest.raises(BatchError, match=r"sample 0: prompt_token_ids must be in \[0, 10\), got 10"):
        collate([Sample([10], [1], 1.0)], vocab_size=10)
    with pytest.raises(BatchError, match="exceeds max_seq_len=3"):
        collate([Sample([1, 2], [3, 4], 1.0)], max_seq_len=3)


def test_select_trims_padding_and_keeps_order():
    b = collate([Sample([1] * 5, [2] * 5, 1.0), Sample([1], [2], 1.0), Sample([1, 1], [2, 2], 0.5)])
    sub = b.select([2, 1])
    assert sub.input_ids.shape == (2, 4) and sub.response_ids.shape == (2, 2)
    assert sub.advantages.tolist() == [[0.5, 0.5], [1.0, 0.0]]
    assert sub.num_response_tokens == 3


def test_with_logprobs_checks_shape():
    b = collate(_samples())
    out = b.with_logprobs(old=torch.zeros(2, 4), ref=torch.ones(2, 4))
    assert out.ref_logprobs.sum() == 8 and b.ref_logprobs is None
    with pytest.raises(BatchError, match=r"old_logprobs must have shape \(2, 4\), got \(2, 3\)"):
        b.with_logprobs(old=torch.zeros(2, 3))


def test_plan_packs_by_token_budget():
    plan = plan_micro_batches([10, 100, 20, 90, 30], max_rows=8, max_tokens=200)
    assert plan == [[1, 3], [4, 2, 0]]  # longest first; 2 x 100 fits, 3 x 100 would not
    assert plan_micro_batches([500, 10], max_rows=8, max_tokens=100) == [[0], [1]]  # oversize row alone
    assert plan_micro_batches([3, 3, 3], max_rows=2) == [[0, 1], [2]]
    with pytest.raises(BatchError, match="max_rows must be >= 1, got 0"):
        plan_micro_batches([1], max_rows=0)


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=40),
    max_rows=st.integers(1, 16),
    max_tokens=st.one_of(st.none(), st.integers(1, 2000)),
)
def test_plan_invariants(lengths, max_rows, max_tokens):
    plan = plan_micro_batches(lengths, max_rows=max_rows, max_tokens=max_tokens)
    flat = [i for g in plan for i in g]
    assert sorted(flat) == list(range(len(lengths)))
    for g in plan:
        assert 1 <= len(g) <= max_rows
        if max_tokens is not None and len(g) > 1:
            assert len(g) * max(lengths[i] for i in g) <= max_tokens


def test_micro_batches_cover_every_token():
    samples = [Sample([1] * (i + 1), [2] * (7 - i), float(i)) for i in range(7)]
    b = collate(samples)
    parts = micro_batches(b, max_rows=3, max_tokens=20)
    assert sum(mb.num_response_tokens for _, mb in parts) == b.num_response_tokens
    for rows, mb in parts:
        assert mb.advantages[:, 0].tolist() == [float(r) for r in rows]
        assert mb.input_ids.numel() <= 20 or mb.size == 1
