"""Token logprobs and entropy through the LM head, a few hundred tokens at a time.

Why: the [tokens, vocab] fp32 logits are the largest tensors of a learner step (8 x 1024
tokens x 49152 vocab x 4 B = 1.6 GB, and autograd of `log_softmax` keeps several of
them). `head_logprobs` runs LM head + fp32 log-softmax on `chunk_tokens` rows at a time
and keeps only the hidden states and two floats per token (logsumexp, entropy); the
backward recomputes each chunk's logits, so the peak is two [chunk, vocab] fp32 buffers
whatever the batch size. The logits are rounded to the head's dtype before going to fp32
and the logits' gradient is cast back to it, exactly like `token_logprobs(head(h))` under
autograd, so the result is that computation's (the tests compare both in fp32).

With a ZeRO-3 partitioned head the weight only exists inside the module's own forward,
so that case calls the module per chunk under activation checkpointing instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_TOKENS = 512  # 512 x 49152 x 4 B = 100 MB per fp32 buffer


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(target) and (optionally) entropy per position, in fp32. logits [..., V], targets [...]."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return lp, None
    entropy = lse - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return lp, entropy


def _spans(n: int, chunk: int):
    for s in range(0, n, chunk):
        yield s, min(n, s + chunk)


class _HeadLogprobs(torch.autograd.Function):
    """(hidden [N, H], weight [V, H], targets [N]) -> (logprob [N], entropy [N] or None), fp32."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_tokens: int, with_entropy: bool):
        n = hidden.shape[0]
        lp = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(lp)
        ent = torch.empty_like(lp) if with_entropy else None
        for s, e in _spans(n, chunk_tokens):
            # in place on z: torch.logsumexp would allocate another [c, V] fp32 temporary
            z = F.linear(hidden[s:e], weight).float()  # [c, V], a fresh buffer
            picked = z.gather(-1, targets[s:e, None]).squeeze(-1)
            top = z.amax(-1, keepdim=True)
            y = z.sub_(top)  # y = z - max; with S = sum exp(y): lse = max + log S
            if ent is None:
                log_s = y.exp_().sum(-1).log_()
            else:
                ey = y.exp()
                total = ey.sum(-1)
                log_s = total.log()
                ent[s:e] = log_s - ey.mul_(y).sum(-1) / total  # -sum p log p = log S - sum(e^y y) / S
                del ey
            lse[s:e] = top.squeeze(-1) + log_s
            lp[s:e] = picked - lse[s:e]
            del z, y
        ctx.set_materialize_grads(False)
        ctx.chunk_tokens = chunk_tokens
        ctx.save_for_backward(hidden, weight, targets, lse, ent)
        return lp, ent

    @staticmethod
    def backward(ctx, g_lp, g_ent):
        hidden, weight, targets, lse, ent = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (g_lp is None and g_ent is None) or not (need_h or need_w):
            return None, None, None, None, None
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        for s, e in _spans(hidden.shape[0], ctx.chunk_tokens):
            h = hidden[s:e]
            logp = F.linear(h, weight).float().sub_(lse[s:e, None])  # [c, V]
            # d logprob / d z = onehot(target) - p;  d entropy / d z = -p * (log p + entropy)
            if g_ent is None:
                gz = logp.exp_().mul_(-g_lp[s:e, None])  # in place: one [c, V] fp32 buffer, not two
            else:
                p = logp.exp()
                gz = logp.add_(ent[s:e, None]).mul_(p).mul_(-g_ent[s:e, None])
                if g_lp is not None:
                    gz.sub_(p.mul_(g_lp[s:e, None]))
                del p
            del logp
            if g_lp is not None:
                gz.scatter_add_(-1, targets[s:e, None], g_lp[s:e, None])
            gz = gz.to(hidden.dtype)
            if grad_h is not None:
                grad_h[s:e] = gz @ weight
            if grad_w is not None:
                grad_w += gz.t() @ h  # per-chunk product in the head's dtype, summed in fp32
        return grad_h, None if grad_w is None else grad_w.to(weight.dtype), None, None, None


def _checkpointed(hidden, head: nn.Module, targets, chunk_tokens: int, with_entropy: bool):
    """Same values by calling `head` per chunk; the backward recomputes one chunk at a time."""

    def one(h, t):
        return token_logprobs(head(h), t, with_entropy)

    lps, ents = [], []
    for s, e in _spans(hidden.shape[0], chunk_tokens):
        if torch.is_grad_enabled():
            lp, ent = checkpoint(one, hidden[s:e], targets[s:e], use_reentrant=False)
        else:
            lp, ent = one(hidden[s:e], targets[s:e])
        lps.append(lp)
        ents.append(ent)
    return torch.cat(lps), (torch.cat(ents) if with_entropy else None)


def head_logprobs(
    hidden: torch.Tensor,
    head: nn.Module,
    targets: torch.Tensor,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
    force_checkpoint: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(target) [N] and entropy [N] (or None), fp32, of `head(hidden)` for hidden [N, H].

    `head` is a bias-free linear layer (the LM head). `force_checkpoint` selects the
    ZeRO-3 path on a plain module (for tests).
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    if hidden.dim() != 2 or targets.shape != hidden.shape[:1]:
        raise ValueError(f"hidden must be [N, H] and targets [N], got {tuple(hidden.shape)} and {tuple(targets.shape)}")
    if getattr(head, "bias", None) is not None:
        raise ValueError("head_logprobs needs a bias-free LM head; this head has a bias")
    weight = head.weight
    if force_checkpoint or hasattr(weight, "ds_id"):  # ZeRO-3: the weight is gathered in head.forward only
        return _checkpointed(hidden, head, targets, chunk_tokens, with_entropy)
    return _HeadLogprobs.apply(hidden, weight, targets, chunk_tokens, with_entropy)
