"""Chunked LM-head logprobs / entropy against the full [N, vocab] computation (tiny Llama head)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from peirce.learner.logprobs import head_logprobs, token_logprobs


@pytest.fixture(scope="module")
def head(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model.get_output_embeddings()  # the real tied LM head: [vocab 49152, hidden 64]


def _inputs(head, n=37, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, head.weight.shape[1], generator=g) * 3).to(dtype)
    targets = torch.randint(0, head.weight.shape[0], (n,), generator=g)
    coef = torch.randn(2, n, generator=g)
    return hidden, targets, coef


def _grads(fn, head, hidden, targets, coef, with_entropy):
    """Values and d/d(hidden, weight) of sum(a * logprob + b * entropy)."""
    h = hidden.clone().requires_grad_(True)
    head.weight.grad = None
    lp, ent = fn(h, targets)
    loss = (coef[0] * lp).sum() + ((coef[1] * ent).sum() if with_entropy else 0.0)
    loss.backward()
    return lp.detach(), None if ent is None else ent.detach(), h.grad, head.weight.grad.clone()


@pytest.mark.parametrize("force_checkpoint", [False, True], ids=["fused", "checkpointed"])
@pytest.mark.parametrize("with_entropy", [False, True])
@pytest.mark.parametrize("chunk", [1, 8, 37, 1000])
def test_chunked_equals_full_values_and_grads(head, chunk, with_entropy, force_checkpoint):
    hidden, targets, coef = _inputs(head)

    def full(h, t):
        return token_logprobs(head(h), t, with_entropy)

    def chunked(h, t):
        return head_logprobs(h, head, t, chunk_tokens=chunk, with_entropy=with_entropy,
                             force_checkpoint=force_checkpoint)

    ref = _grads(full, head, hidden, targets, coef, with_entropy)
    got = _grads(chunked, head, hidden, targets, coef, with_entropy)
    for name, r, o in zip(("logprob", "entropy", "grad_hidden", "grad_weight"), ref, got):
        if r is None:
            assert o is None, name
            continue
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_entropy_only_gradient(head):
    """The logprob output unused: its gradient is None inside the function, not a crash."""
    hidden, targets, _ = _inputs(head, n=9)
    h1, h2 = hidden.clone().requires_grad_(True), hidden.clone().requires_grad_(True)
    token_logprobs(head(h1), targets, True)[1].sum().backward()
    head_logprobs(h2, head, targets, chunk_tokens=4, with_entropy=True)[1].sum().backward()
    torch.testing.assert_close(h2.grad, h1.grad, atol=1e-5, rtol=1e-5)


def test_bf16_head_matches_bf16_full(head):
    """In bf16 the logits are rounded like `head(h).float()`; weight grads are summed in fp32."""
    head16 = nn.Linear(head.in_features, head.out_features, bias=False, dtype=torch.bfloat16)
    with torch.no_grad():
        head16.weight.copy_(head.weight)
    hidden, targets, coef = _inputs(head, dtype=torch.bfloat16)
    ref = _grads(lambda h, t: token_logprobs(head16(h), t, True), head16, hidden, targets, coef, True)
    got = _grads(lambda h, t: head_logprobs(h, head16, t, chunk_tokens=8, with_entropy=True), head16, hidden,
                 targets, coef, True)
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=0)  # same bf16 logits, fp32 softmax
    torch.testing.assert_close(got[1], ref[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[2].float(), ref[2].float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got[3].float(), ref[3].float(), atol=2e-2, rtol=2e-2)


def test_no_grad_keeps_nothing(head):
    hidden, targets, _ = _inputs(head)
    with torch.no_grad():
        lp, ent = head_logprobs(hidden, head, targets, chunk_tokens=5, with_entropy=True)
    assert lp.grad_fn is None and lp.dtype == torch.float32 and ent.shape == (37,)
    torch.testing.assert_close(lp, token_logprobs(head(hidden), targets)[0].detach(), atol=1e-5, rtol=1e-5)


def test_rejects_bad_inputs(head):
    hidden, targets, _ = _inputs(head, n=4)
    with pytest.raises(ValueError, match="chunk_tokens must be >= 1, got 0"):
        head_logprobs(hidden, head, targets, chunk_tokens=0)
    with pytest.raises(ValueError, match=r"hidden must be \[N, H\] and targets \[N\]"):
        head_logprobs(hidden[None], head, targets)
    with pytest.raises(ValueError, match="bias-free"):
        head_logprobs(hidden, nn.Linear(hidden.shape[1], 10), targets % 10)
