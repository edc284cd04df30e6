"""The raw /dev/shm staging file: what the worker reads back is bit-exactly what was written."""

from __future__ import annotations

import os

import pytest
import torch

from peirce.rollout.shm_stage import ShmStage, layout, raw_tensors
from peirce.transport.shm_files import ALIGN


def _named() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [("a.weight", torch.randn(3, 5, generator=g)), ("b.bias", torch.randn(7, generator=g)),
            ("c.weight", torch.randn(2, 3, 4, generator=g)[:, 1]),  # not contiguous
            ("empty", torch.zeros(0, 4))]


def test_layout_aligns_every_slot():
    table, size = layout(_named(), torch.bfloat16)
    assert [r[0] for r in table] == ["a.weight", "b.bias", "c.weight", "empty"]
    assert all(off % ALIGN == 0 for *_, off in table)
    assert table[1][3] == ALIGN and size == table[-1][3]  # 15 bf16 = 30 bytes -> next slot at 64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_write_then_read_is_bit_exact_and_reuses_the_file(tmp_path, dtype):
    stage = ShmStage(str(tmp_path))
    named = _named()
    for scale in (1.0, -3.0):  # the second write reuses the mapping
        batch = [(n, t * scale) for n, t in named]
        table, nbytes = stage.write(batch, dtype)
        assert nbytes == sum(t.numel() for _, t in batch) * dtype.itemsize
        got = dict(raw_tensors(stage.path, table))
        for n, t in batch:
            assert got[n].dtype == dtype and torch.equal(got[n], t.to(dtype)), n
    assert len(os.listdir(tmp_path)) == 1
    stage.close()
    assert os.listdir(tmp_path) == []


def test_read_refuses_a_table_past_the_file(tmp_path):
    stage = ShmStage(str(tmp_path))
    table, _ = stage.write(_named()[:1], torch.float32)
    with pytest.raises(ValueError, match="a.weight ends at byte"):
        list(raw_tensors(stage.path, [(table[0][0], "float32", [30, 5], 0)]))
    stage.close()


def test_a_staging_file_removed_behind_its_back_is_made_again(tmp_path):
    stage = ShmStage(str(tmp_path))
    named = _named()[:2]
    stage.write(named, torch.float32)
    os.unlink(stage.path)
    table, _ = stage.write(named, torch.float32)
    got = dict(raw_tensors(stage.path, table))
    assert all(torch.equal(got[n], t) for n, t in named)
    stage.close()
