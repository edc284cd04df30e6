"""Padding-free micro-batches: sequences share rows, position ids restart per sequence.

Why: rollouts vary in length and a right-padded micro-batch spends compute (MLP and
attention) on padding. Here sequences are taken longest first; a micro-batch's row width
is its longest sequence and shorter ones fill rows first-fit, so padding is only what
is left at the end of a row.

Attention separation: the rows go to the model with `attention_mask=None` and position
ids that restart at 0 where a sequence starts. transformers 5.x detects that layout
(`masking_utils.find_packed_sequence_indices`) and builds a block-diagonal causal mask
for sdpa and eager attention (flash attention uses varlen kernels instead); torch's CPU
flash kernel takes that mask (~20% slower per row than `is_causal`, still far cheaper
than padding). Padding sits at the end of a row with position ids that continue the
last sequence, so it is never attended (causal) and never looks like a new sequence; a
micro-batch without shared rows therefore keeps the plain `is_causal` path.

Only the hidden states that predict response tokens are gathered (`token_index`), and
the per-token results go back to the micro-batch's [B, R] layout through `dest_*`, so
losses see exactly the tensors of the padded batch. Pure functions, no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from peirce.learner.batch import BatchError, TrainBatch


def plan_packed(
    seq_lengths: Sequence[int], *, max_rows: int, max_tokens: int | None = None, pack: bool = True
) -> list[list[list[int]]]:
    """Micro-batches -> rows -> sample indices, so that rows x width fits `max_tokens`.

    Longest first; a micro-batch's width is its first (longest) sequence. A sequence
    joins the first row with room (`pack`), else opens a row while the micro-batch has
    fewer than `max_rows` rows and (rows + 1) x width <= `max_tokens`, else starts the
    next micro-batch. A sequence longer than `max_tokens` gets a micro-batch of its own.
    `pack=False` gives one sequence per row (length bucketing only).
    """
    if max_rows < 1:
        raise BatchError(f"max_rows must be >= 1, got {max_rows}")
    if max_tokens is not None and max_tokens < 1:
        raise BatchError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    order = sorted(range(len(seq_lengths)), key=lambda i: (-int(seq_lengths[i]), i))
    micros: list[list[list[int]]] = []
    rows: list[list[int]] = []
    free: list[int] = []  # room left in each row of the current micro-batch
    width = 0
    for i in order:
        n = int(seq_lengths[i])
        if n < 1:
            raise BatchError(f"sequence {i} has length {n}; every sequence needs >= 1 token")
        slot = next((r for r, room in enumerate(free) if room >= n), None) if pack else None
        if slot is not None:
            rows[slot].append(i)
            free[slot] -= n
            continue
        if rows and len(rows) < max_rows and (max_tokens is None or (len(rows) + 1) * width <= max_tokens):
            rows.append([i])
            free.append(width - n)
            continue
        if rows:
            micros.append(rows)
        rows, free, width = [[i]], [0], n
    if rows:
        micros.append(rows)
    return micros


@dataclass
class PackedMicroBatch:
    """One forward's inputs for a `TrainBatch` micro-batch `mb` laid out in shared rows."""

    input_ids: torch.Tensor  # [P, W] long
    position_ids: torch.Tensor  # [P, W] long, restart at each sequence, continue over padding
    token_index: torch.Tensor  # [N] long, flat index into P * W of the hidden state predicting each target
    targets: torch.Tensor  # [N] long, the response tokens
    dest_row: torch.Tensor  # [N] long, row in mb's [B, R] tensors
    dest_col: torch.Tensor  # [N] long, column in mb's [B, R] tensors
    shared_rows: bool  # some row holds more than one sequence (the model builds a block mask)

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    def to(self, device: torch.device | str) -> PackedMicroBatch:
        return PackedMicroBatch(
            *(getattr(self, k).to(device) for k in ("input_ids", "position_ids", "token_index", "targets",
                                                     "dest_row", "dest_col")),
            shared_rows=self.shared_rows,
        )

    def scatter(self, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Per-target values [N] back into a zero-filled [B, R] tensor (differentiable)."""
        out = values.new_zeros(shape)
        return out.index_put((self.dest_row, self.dest_col), values)


def pack_rows(mb: TrainBatch, rows: Sequence[Sequence[int]], pad_token_id: int = 0) -> PackedMicroBatch:
    """Lay out `mb`'s samples (indices into `mb`, grouped into rows) as one packed forward."""
    lengths = mb.seq_lengths.tolist()
    width = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    token_index, targets, dest_row, dest_col = [], [], [], []
    seen = sorted(i for row in rows for i in row)
    if seen != list(range(mb.size)):
        raise BatchError(f"rows must hold each of the {mb.size} samples once, got {[list(r) for r in rows]}")
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n, p, m = lengths[i], int(mb.prompt_lengths[i]), int(mb.response_lengths[i])
            input_ids[r, start : start + n] = mb.input_ids[i, :n]
            position_ids[r, start : start + n] = torch.arange(n)
            # response token j of sample i is predicted at sample position p + j - 1
            token_index.append(r * width + start + p - 1 + torch.arange(m))
            targets.append(mb.response_ids[i, :m])
            dest_row.append(torch.full((m,), i, dtype=torch.long))
            dest_col.append(torch.arange(m))
            start += n
        if start < width:  # padding continues the last sequence's positions: no new segment
            last = position_ids[r, start - 1] if start else -1
            position_ids[r, start:] = last + 1 + torch.arange(width - start)
    return PackedMicroBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        token_index=torch.cat(token_index),
        targets=torch.cat(targets),
        dest_row=torch.cat(dest_row),
        dest_col=torch.cat(dest_col),
        shared_rows=any(len(row) > 1 for row in rows),
    )


def packed_micro_batches(
    batch: TrainBatch, *, max_rows: int, max_tokens: int | None = None, pack: bool = True, pad_token_id: int = 0
) -> list[tuple[list[int], TrainBatch, PackedMicroBatch]]:
    """(sample indices in `batch`, trimmed micro-batch, its packed layout) per micro-batch."""
    out = []
    for rows in plan_packed(batch.seq_lengths.tolist(), max_rows=max_rows, max_tokens=max_tokens, pack=pack):
        samples = [i for row in rows for i in row]
        mb = batch.select(samples)
        local: list[list[int]] = []
        k = 0
        for row in rows:
            local.append(list(range(k, k + len(row))))
            k += len(row)
        out.append((samples, mb, pack_rows(mb, local, pad_token_id)))
    return out
