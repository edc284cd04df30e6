"""Padding-free packing: plan invariants, layout, and equality with the padded batch on a real model."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peirce.learner.batch import BatchError, Sample, collate
from peirce.learner.engine import ResponseLogprobs
from peirce.learner.packing import pack_rows, packed_micro_batches, plan_packed


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=40),
    max_rows=st.integers(1, 16),
    max_tokens=st.one_of(st.none(), st.integers(1, 2000)),
    pack=st.booleans(),
)
def test_plan_invariants(lengths, max_rows, max_tokens, pack):
    plan = plan_packed(lengths, max_rows=max_rows, max_tokens=max_tokens, pack=pack)
    flat = [i for micro in plan for row in micro for i in row]
    assert sorted(flat) == list(range(len(lengths)))
    for micro in plan:
        width = max(lengths[i] for row in micro for i in row)
        assert width == lengths[micro[0][0]]  # the first sequence is the longest
        assert 1 <= len(micro) <= max_rows
        assert all(sum(lengths[i] for i in row) <= width for row in micro)
        assert pack or all(len(row) == 1 for row in micro)
        if max_tokens is not None and len(micro) > 1:
            assert len(micro) * width <= max_tokens


def test_plan_fills_rows_first_fit():
    # width 10: 10 fills row 0, 6 opens row 1 and 4 fills its room; the 3s start a micro-batch
    # of width 3 (one per row: a row is never wider than the micro-batch's longest sequence)
    assert plan_packed([10, 6, 4, 3, 3, 3], max_rows=2, max_tokens=20) == [[[0], [1, 2]], [[3], [4]], [[5]]]
    assert plan_packed([10, 6, 3, 3, 2], max_rows=3) == [[[0], [1, 2], [3, 4]]]
    assert plan_packed([10, 6, 4], max_rows=4, pack=False) == [[[0], [1], [2]]]
    assert plan_packed([50, 5], max_rows=4, max_tokens=20) == [[[0]], [[1]]]  # over budget: alone
    with pytest.raises(BatchError, match="max_rows must be >= 1, got 0"):
        plan_packed([1], max_rows=0)
    with pytest.raises(BatchError, match="sequence 1 has length 0"):
        plan_packed([3, 0], max_rows=2)


def test_pack_rows_layout():
    b = collate([Sample([1, 2, 3], [10, 11], 1.0), Sample([4], [12, 13, 14, 15], 1.0), Sample([5, 6], [16], 1.0)])
    packed = pack_rows(b, [[0, 2], [1]])
    assert packed.input_ids.tolist() == [[1, 2, 3, 10, 11, 5, 6, 16], [4, 12, 13, 14, 15, 0, 0, 0]]
    # restart per sequence; padding continues the last sequence (no new segment)
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7]]
    flat = packed.input_ids.flatten()
    assert flat[packed.token_index + 1].tolist() == packed.targets.tolist()
    assert packed.targets.tolist() == [10, 11, 16, 12, 13, 14, 15]
    assert list(zip(packed.dest_row.tolist(), packed.dest_col.tolist())) == [
        (0, 0), (0, 1), (2, 0), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert packed.shared_rows and packed.num_tokens == 16
    out = packed.scatter(packed.targets.float(), tuple(b.response_mask.shape))
    assert out.tolist() == (b.response_ids * b.response_mask).tolist()
    with pytest.raises(BatchError, match="each of the 3 samples once"):
        pack_rows(b, [[0, 1]])


def _samples(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [(9, 7), (2, 3), (5, 2), (3, 6), (12, 4), (1, 2), (4, 4)][:n]
    return [Sample(torch.randint(0, 2000, (p,), generator=g).tolist(), torch.randint(0, 2000, (r,), generator=g).tolist(),
                   float(torch.randn(1, generator=g))) for p, r in lengths]


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.use_cache = False
    return model.train()


def _padded_reference(hf, batch):
    """The padded batch the old way: full logits with a 2D attention mask, response positions gathered."""
    logits = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logp = torch.log_softmax(logits.float(), -1)
    lp = torch.gather(logp, 1, batch.response_index[..., None].expand(-1, -1, logp.shape[-1]))
    return lp.gather(-1, batch.response_ids[..., None]).squeeze(-1) * batch.response_mask


def _loss_and_grads(hf, loss_of):
    hf.zero_grad(set_to_none=True)
    loss = loss_of()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in hf.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("pack, max_rows, max_tokens", [(True, 3, 48), (True, 8, None), (False, 3, 40)])
def test_packed_equals_padded_batch(hf, pack, max_rows, max_tokens):
    """Same logprobs, loss and parameter gradients as one right-padded batch (fp32, 1e-5)."""
    batch = collate(_samples())
    parts = packed_micro_batches(batch, max_rows=max_rows, max_tokens=max_tokens, pack=pack)
    assert any(p.shared_rows for _, _, p in parts) == pack  # the packed case really shares rows
    module = ResponseLogprobs(hf, chunk_tokens=5)
    adv = batch.advantages
    total = batch.num_response_tokens

    def packed_loss():
        loss = 0.0
        for _, mb, packed in parts:
            lp, _ = module(packed.input_ids, packed.position_ids, packed.token_index, packed.targets)
            lp = packed.scatter(lp, tuple(mb.response_mask.shape))
            loss = loss + (-(mb.advantages * lp * mb.response_mask).sum() / total)
        return loss

    ref_loss, ref_grads = _loss_and_grads(hf, lambda: -(adv * _padded_reference(hf, batch)).sum() / total)
    loss, grads = _loss_and_grads(hf, packed_loss)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    with torch.no_grad():
        ref_lp = _padded_reference(hf, batch)
        for samples, mb, packed in parts:
            lp, _ = module(packed.input_ids, packed.position_ids, packed.token_index, packed.targets)
            r = mb.response_mask.shape[1]
            got = packed.scatter(lp, tuple(mb.response_mask.shape))
            torch.testing.assert_close(got, ref_lp[samples, :r], atol=1e-5, rtol=0)


def test_without_position_restart_sequences_would_leak(hf):
    """The separation is real: the same packed row with one running position sequence differs."""
    batch = collate([Sample([1] * 6, [2] * 6, 1.0), Sample([3, 4], [5, 6, 7], 1.0), Sample([8, 9], [10, 11], 1.0)])
    (_, mb, packed), = packed_micro_batches(batch, max_rows=2, max_tokens=None)
    assert packed.shared_rows
    module = ResponseLogprobs(hf)
    with torch.no_grad():
        good = module(packed.input_ids, packed.position_ids, packed.token_index, packed.targets)[0]
        running = torch.arange(packed.input_ids.shape[1])[None].expand_as(packed.input_ids)
        leaky = module(packed.input_ids, running, packed.token_index, packed.targets)[0]
    assert (good - leaky).abs().max() > 1e-3
