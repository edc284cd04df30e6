"""SFTConfig rules name the field and value; the shipped SFT config validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from peirce.config import ConfigError, load_config
from peirce.sft.config import SFTConfig
from peirce.sft.loop import plan_steps

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_sft_config_validates():
    cfg = load_config(SFTConfig, CONFIGS / "sft.yaml")
    assert cfg.families == ["deduction"] and cfg.lr == 3e-4 and cfg.model == "embedded"


@pytest.mark.parametrize("override, field", [
    ("families=[math]", "families"),  # no worked solutions
    ("families=[nope]", "families"),
    ("families=[deduction,deduction]", "families"),
    ("levels=[0]", "levels"),
    ("levels=[1,1]", "levels"),
    ("lr=0", "lr"),
    ("lr=.nan", "lr"),
    ("examples=0", "examples"),
    ("examples=true", "examples"),
    ("micro_batch_size=16", "micro_batch_size"),  # > batch_size 8
    ("model=/no/such/folder", "model"),
    ("prompt_style=raw", "prompt_style"),
    ("typo=1", "typo"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=rf"(?m)^  {field}"):
        load_config(SFTConfig, CONFIGS / "sft.yaml", [override])


def test_plan_covers_every_example_once_per_epoch_and_is_seeded():
    plan = plan_steps(10, 4, 2, seed=3)
    assert [len(rows) for _, rows in plan] == [4, 4, 2, 4, 4, 2]
    assert [e for e, _ in plan] == [1, 1, 1, 2, 2, 2]
    for epoch in (1, 2):
        assert sorted(i for e, rows in plan if e == epoch for i in rows) == list(range(10))
    assert plan == plan_steps(10, 4, 2, seed=3) and plan != plan_steps(10, 4, 2, seed=4)
    assert [rows for e, rows in plan if e == 1] != [rows for e, rows in plan if e == 2]  # reshuffled
    with pytest.raises(ValueError, match="batch_size=0"):
        plan_steps(10, 0, 1, seed=0)
