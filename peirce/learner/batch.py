"""Turn rollout samples into padded training tensors, and split them into micro-batches.

Layout (right padding, one row per sample):

    input_ids:  p0 p1 p2 r0 r1 r2 r3 PAD PAD
    response j is predicted by the logits at position prompt_len + j - 1

so `response_index[i, j]` holds that position and the engine gathers hidden states only
there (the prompt's logits are never materialised). Every per-token tensor is
[batch, response_len] and aligned on response tokens, matching `LossInputs`.
Pure functions, no model: unit-tested on their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class SampleLike(Protocol):
    """What `collate` reads from a sample; wire structs with these attributes work as is."""

    prompt_token_ids: Sequence[int]
    response_token_ids: Sequence[int]
    advantage: float | Sequence[float]  # scalar: same for every response token
    rollout_logprobs: Sequence[float] | None  # behaviour policy's token logprobs (for TIS)
    policy_version: int  # version of the policy that generated the response


@dataclass
class Sample:
    prompt_token_ids: Sequence[int]
    response_token_ids: Sequence[int]
    advantage: float | Sequence[float]
    rollout_logprobs: Sequence[float] | None = None
    policy_version: int = 0


@dataclass(frozen=True)
class SFTExample:
    """A supervised (prompt, target response) pair for `LearnerEngine.sft_step`.

    It satisfies `SampleLike` (advantage 0, no rollout logprobs, version 0: all unused by
    the SFT loss), so `collate` lays it out exactly like an RL sample.
    """

    prompt_token_ids: Sequence[int]
    response_token_ids: Sequence[int]
    advantage: float = 0.0
    rollout_logprobs: Sequence[float] | None = None
    policy_version: int = 0


class BatchError(ValueError):
    """A sample cannot be collated; the message names the sample index and field."""


@dataclass
class TrainBatch:
    input_ids: torch.Tensor  # [B, L] long, right padded with pad_token_id
    attention_mask: torch.Tensor  # [B, L] long, 1 = real token
    position_ids: torch.Tensor  # [B, L] long, 0..len-1 then 0 on padding
    response_ids: torch.Tensor  # [B, R] long, target tokens (pad_token_id on padding)
    response_index: torch.Tensor  # [B, R] long, position whose logits predict response_ids
    response_mask: torch.Tensor  # [B, R] float32, 1 = real response token
    advantages: torch.Tensor  # [B, R] float32 (0 on padding)
    policy_versions: torch.Tensor  # [B] long
    prompt_lengths: torch.Tensor  # [B] long
    response_lengths: torch.Tensor  # [B] long
    rollout_logprobs: torch.Tensor | None = None  # [B, R] float32 or None if no sample had them
    old_logprobs: torch.Tensor | None = None  # [B, R], filled by the caller (engine.logprobs) for PPO
    ref_logprobs: torch.Tensor | None = None  # [B, R], filled by the caller or the engine

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_lengths.sum())

    @property
    def num_loss_tokens(self) -> int:
        """Response tokens the loss covers: num_response_tokens less the masked-out rows
        (DAPO overlong filtering zeroes a sample's response_mask row)."""
        return int(self.response_mask.sum())

    @property
    def num_loss_rows(self) -> int:
        """Rows with at least one token under the loss."""
        return int((self.response_mask.sum(-1) > 0).sum())

    @property
    def seq_lengths(self) -> torch.Tensor:
        return self.prompt_lengths + self.response_lengths

    def select(self, rows: Sequence[int]) -> TrainBatch:
        """Rows `rows` (in that order), with padding trimmed to their own longest sequence."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        if idx.numel() == 0:
            raise BatchError("select: rows must not be empty")
        seq_len = int((self.prompt_lengths[idx] + self.response_lengths[idx]).max())
        resp_len = int(self.response_lengths[idx].max())
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is None:
                out[f.name] = None
            elif t.dim() == 1:
                out[f.name] = t[idx]
            elif f.name in ("input_ids", "attention_mask", "position_ids"):
                out[f.name] = t[idx, :seq_len]
            else:
                out[f.name] = t[idx, :resp_len]
        return TrainBatch(**out)

    def to(self, device: torch.device | str) -> TrainBatch:
        moved = {
            f.name: (None if getattr(self, f.name) is None else getattr(self, f.name).to(device))
            for f in fields(self)
        }
        return TrainBatch(**moved)

    def with_logprobs(
        self, *, old: torch.Tensor | None = None, ref: torch.Tensor | None = None
    ) -> TrainBatch:
        """A copy carrying learner-side old/ref logprobs (shape checked against the batch)."""
        for name, t in (("old_logprobs", old), ("ref_logprobs", ref)):
            if t is not None and tuple(t.shape) != tuple(self.response_mask.shape):
                raise BatchError(
                    f"{name} must have shape {tuple(self.response_mask.shape)}, got {tuple(t.shape)}"
                )
        return replace(
            self,
            old_logprobs=self.old_logprobs if old is None else old.detach().float(),
            ref_logprobs=self.ref_logprobs if ref is None else ref.detach().float(),
        )


def _per_token(value: float | Sequence[float], n: int, i: int, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        v = float(value)
        if not math.isfinite(v):
            raise BatchError(f"sample {i}: {name} must be finite, got {value!r}")
        return [v] * n
    vals = [float(x) for x in value]
    if len(vals) != n:
        raise BatchError(
            f"sample {i}: {name} has {len(vals)} values but response_token_ids has {n} tokens"
        )
    if not all(math.isfinite(x) for x in vals):
        raise BatchError(f"sample {i}: {name} contains a non-finite value")
    return vals


def _check_ids(ids: Sequence[int], i: int, name: str, vocab_size: int | None) -> list[int]:
    out = [int(t) for t in ids]
    bad = [t for t in out if t < 0 or (vocab_size is not None and t >= vocab_size)]
    if bad:
        limit = f"[0, {vocab_size})" if vocab_size is not None else ">= 0"
        raise BatchError(f"sample {i}: {name} must be in {limit}, got {bad[0]}")
    return out


def collate(
    samples: Sequence[SampleLike],
    *,
    pad_token_id: int = 0,
    vocab_size: int | None = None,
    max_seq_len: int | None = None,
) -> TrainBatch:
    """Right-pad `samples` into a `TrainBatch`; reject bad samples with a precise error."""
    if len(samples) == 0:
        raise BatchError("collate: samples must not be empty")
    prompts, responses, advs, rlps, versions = [], [], [], [], []
    have_rollout = [s.rollout_logprobs is not None for s in samples]
    if any(have_rollout) and not all(have_rollout):
        missing = have_rollout.index(False)
        raise BatchError(f"sample {missing}: rollout_logprobs is None while other samples have them")
    for i, s in enumerate(samples):
        p = _check_ids(s.prompt_token_ids, i, "prompt_token_ids", vocab_size)
        r = _check_ids(s.response_token_ids, i, "response_token_ids", vocab_size)
        if not p:
            raise BatchError(f"sample {i}: prompt_token_ids is empty (the first response token needs context)")
        if not r:
            raise BatchError(f"sample {i}: response_token_ids is empty")
        if max_seq_len is not None and len(p) + len(r) > max_seq_len:
            raise BatchError(f"sample {i}: sequence length {len(p) + len(r)} exceeds max_seq_len={max_seq_len}")
        prompts.append(p)
        responses.append(r)
        advs.append(_per_token(s.advantage, len(r), i, "advantage"))
        if s.rollout_logprobs is not None:
            rlps.append(_per_token(s.rollout_logprobs, len(r), i, "rollout_logprobs"))
        versions.append(int(s.policy_version))

    b = len(samples)
    seq_len = max(len(p) + len(r) for p, r in zip(prompts, responses))
    resp_len = max(len(r) for r in responses)
    input_ids = torch.full((b, seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((b, seq_len), dtype=torch.long)
    position_ids = torch.zeros((b, seq_len), dtype=torch.long)
    response_ids = torch.full((b, resp_len), pad_token_id, dtype=torch.long)
    response_index = torch.zeros((b, resp_len), dtype=torch.long)
    response_mask = torch.zeros((b, resp_len), dtype=torch.float32)
    advantages = torch.zeros((b, resp_len), dtype=torch.float32)
    rollout = torch.zeros((b, resp_len), dtype=torch.float32) if rlps else None
    for i, (p, r) in enumerate(zip(prompts, responses)):
        n, m = len(p), len(r)
        input_ids[i, : n + m] = torch.tensor(p + r, dtype=torch.long)
        attention_mask[i, : n + m] = 1
        position_ids[i, : n + m] = torch.arange(n + m)
        response_ids[i, :m] = torch.tensor(r, dtype=torch.long)
        response_index[i, :m] = torch.arange(n - 1, n + m - 1)
        response_mask[i, :m] = 1.0
        advantages[i, :m] = torch.tensor(advs[i], dtype=torch.float32)
        if rollout is not None:
            rollout[i, :m] = torch.tensor(rlps[i], dtype=torch.float32)
    return TrainBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        response_ids=response_ids,
        response_index=response_index,
        response_mask=response_mask,
        advantages=advantages,
        policy_versions=torch.tensor(versions, dtype=torch.long),
        prompt_lengths=torch.tensor([len(p) for p in prompts], dtype=torch.long),
        response_lengths=torch.tensor([len(r) for r in responses], dtype=torch.long),
        rollout_logprobs=rollout,
    )


def collate_sft(
    examples: Sequence[SFTExample], *, pad_token_id: int = 0, vocab_size: int | None = None,
    max_seq_len: int | None = None,
) -> TrainBatch:
    """`collate` for SFT: the loss covers response tokens only, prompts are context."""
    for i, ex in enumerate(examples):
        if not isinstance(ex, SFTExample):
            raise BatchError(f"example {i}: expected SFTExample, got {type(ex).__name__}")
    return collate(examples, pad_token_id=pad_token_id, vocab_size=vocab_size, max_seq_len=max_seq_len)


def plan_micro_batches(
    seq_lengths: Sequence[int], *, max_rows: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Group row indices so each group's padded size (rows x longest row) fits the budget.

    Rows are sorted longest first and packed greedily, so rows of similar length share a
    micro-batch and little compute goes to padding. A single row longer than `max_tokens`
    gets a micro-batch of its own (a sequence cannot be split). Every index appears once.
    """
    if max_rows < 1:
        raise BatchError(f"max_rows must be >= 1, got {max_rows}")
    if max_tokens is not None and max_tokens < 1:
        raise BatchError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    order = sorted(range(len(seq_lengths)), key=lambda i: (-int(seq_lengths[i]), i))
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        n = int(seq_lengths[i])
        width = max(longest, n)
        fits_rows = len(current) + 1 <= max_rows
        fits_tokens = max_tokens is None or (len(current) + 1) * width <= max_tokens
        if current and not (fits_rows and fits_tokens):
            groups.append(current)
            current, width = [], n
        current.append(i)
        longest = width
    if current:
        groups.append(current)
    return groups


def micro_batches(
    batch: TrainBatch, *, max_rows: int, max_tokens: int | None = None
) -> list[tuple[list[int], TrainBatch]]:
    """`plan_micro_batches` applied: (row indices in `batch`, trimmed micro-batch) pairs."""
    plan = plan_micro_batches(batch.seq_lengths.tolist(), max_rows=max_rows, max_tokens=max_tokens)
    return [(rows, batch.select(rows)) for rows in plan]
