from pathlib import Path

import pytest

from peirce.config import ConfigError, TrainConfig, dump_config, load_config

REPO = Path(__file__).resolve().parents[2]


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = load_config(TrainConfig)
    dump_config(cfg, tmp_path / "c.yaml")
    assert load_config(TrainConfig, tmp_path / "c.yaml") == cfg


def test_dotted_overrides_parse_yaml_values():
    cfg = load_config(TrainConfig, None, ["rollout.workers=3", "async.max_staleness=0", "tasks.levels=[1,2,3]", "algorithm.tis_cap=null"])
    assert cfg.rollout.workers == 3
    assert cfg.async_.max_staleness == 0
    assert cfg.tasks.levels == [1, 2, 3]
    assert cfg.algorithm.tis_cap is None


@pytest.mark.parametrize(
    "override, expected",
    [
        ("rollout.workers=-1", "rollout.workers: Input should be greater than or equal to 0 (got -1)"),
        ("learner.bogus=1", "learner.bogus: Extra inputs are not permitted"),
        ("tasks.levels=[0,7]", "tasks.levels must be within 1..5, got [0, 7]"),
        ("learner.zero_stage=5", "learner.zero_stage"),
    ],
)
def test_errors_name_the_field_and_value(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, [override])
    assert expected in str(info.value)


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(TrainConfig, None, ["novalue"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TrainConfig, tmp_path / "list.yaml")


def test_overriding_a_scalar_as_section_is_an_error(tmp_path):
    (tmp_path / "c.yaml").write_text("rollout:\n  workers: 2\n")
    with pytest.raises(ConfigError, match="rollout.workers is not a section"):
        load_config(TrainConfig, tmp_path / "c.yaml", ["rollout.workers.x=1"])
