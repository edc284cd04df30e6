"""Pipeline config resolution (pure): every shipped config validates; layers apply in order."""

from pathlib import Path

import pytest
import yaml

from peirce.config import ConfigError, TrainConfig, load_config
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.resolve import base_model, domain_configs, merge_layers, specialist_configs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    data = yaml.safe_load(path.read_text())
    if "stage_a" in data or "profile" in data:
        pc = load_config(PipelineConfig, path)
        assert len(specialist_configs(pc)) == len(pc.stage_a.specialists)
        assert domain_configs(pc, "/merged")
    else:
        load_config(TrainConfig, path)


def test_layers_later_wins_and_sections_equal_dotted_keys():
    tree = merge_layers({"rollout.max_tokens": 8, "learner": {"lr": 1e-3}}, {"rollout": {"max_tokens": 16}},
                        {"learner.lr": "2.0e-4"})
    assert tree == {"rollout": {"max_tokens": 16}, "learner": {"lr": 2e-4}}


def test_default_pipeline_resolves_recipe():
    pc = load_config(PipelineConfig, CONFIGS / "default.yaml")
    specs = specialist_configs(pc)
    assert set(specs) == {"deduction", "induction", "abduction"}
    for name, cfg in specs.items():
        assert cfg.tasks.families == [name]
        assert cfg.tasks.levels == [1, 2]  # reference curriculum: level 1 then level 2
        assert cfg.model.path == "embedded"
        assert cfg.run_dir.endswith(f"stage_a/{name}")
    dom = domain_configs(pc, "/x/merged")
    assert dom["domain-from-merged"].model.path == "/x/merged"
    assert dom["domain-from-base"].model.path == "embedded"
    assert dom["domain-from-merged"].algorithm.advantage == "grpo"


def test_smoke_profile_uses_tiny_model_everywhere():
    pc = load_config(PipelineConfig, None, ["profile=smoke"])
    assert base_model(pc) == "tiny"
    assert all(c.model.path == "tiny" for c in specialist_configs(pc).values())
    assert domain_configs(pc, "/m")["domain-from-base"].model.path == "tiny"


def test_bad_specialist_override_names_the_stage_and_field():
    pc = load_config(PipelineConfig, None, ["stage_a.specialists.deduction.rollout.workers=-2"])
    with pytest.raises(ConfigError, match=r"(?s)stage_a.specialists.deduction.*rollout.workers"):
        specialist_configs(pc)
