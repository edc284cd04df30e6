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
    if path.name.startswith("sft"):
        from peirce.sft.config import SFTConfig

        load_config(SFTConfig, path)
    elif "stage_a" in data or "profile" in data:
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
        assert cfg.model.path == f"{cfg.run_dir}/warmup"  # RL starts from the warm-up's checkpoint
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


# ---- stage-A warm-up -------------------------------------------------------------------
from peirce.pipeline.resolve import stage_a_configs, warmup_configs  # noqa: E402


def test_default_pipeline_warms_up_every_specialist_and_rl_starts_from_it():
    pc = load_config(PipelineConfig, CONFIGS / "default.yaml")
    runs, warm = stage_a_configs(pc)
    assert set(warm) == set(runs) == {"deduction", "induction", "abduction"}
    for name, w in warm.items():
        assert w.run_dir == f"{runs[name].run_dir}/warmup" and w.name == f"{name}-warmup"
        assert w.model == "embedded" and w.families == runs[name].tasks.families == [name]
        assert w.prompt_style == runs[name].tasks.prompt_style == "chat_template"  # the prompts RL samples
        assert w.max_seq_len == runs[name].model.max_model_len
        assert runs[name].model.path == w.run_dir  # pending until the warm-up has run
    assert warm["induction"].levels == [1, 2, 3] and warm["deduction"].levels == [1]  # per-specialist override
    done = specialist_configs(pc, {"deduction": "/ckpt/ded"})
    assert done["deduction"].model.path == "/ckpt/ded"


def test_warmup_is_on_for_the_embedded_model_only_unless_asked():
    assert set(warmup_configs(load_config(PipelineConfig, None, []))) == {"deduction", "induction", "abduction"}
    assert warmup_configs(load_config(PipelineConfig, None, ["profile=smoke"])) == {}
    smoke_on = warmup_configs(load_config(PipelineConfig, None, ["profile=smoke", "stage_a.warmup.enabled=true"]))
    assert set(smoke_on) == {"deduction", "induction", "abduction"}
    assert all(w.model == "tiny" and w.examples == 8 and w.prompt_style == "reference" for w in smoke_on.values())
    off = load_config(PipelineConfig, CONFIGS / "default.yaml", ["stage_a.specialists.induction.warmup.enabled=false"])
    runs, warm = stage_a_configs(off)
    assert set(warm) == {"deduction", "abduction"} and runs["induction"].model.path == "embedded"


def test_smoke_config_exercises_the_warmup():
    runs, warm = stage_a_configs(load_config(PipelineConfig, CONFIGS / "smoke.yaml"))
    assert set(warm) == set(runs) and all(w.examples <= 8 for w in warm.values())


@pytest.mark.parametrize("override, match", [
    ("stage_a.warmup.enabled=maybe", r"stage_a.warmup.enabled \(deduction\): must be true, false or unset"),
    ("stage_a.warmup.lr=-1", r"(?s)stage_a.warmup \(deduction\).*lr"),
    ("stage_a.warmup.epochz=2", r"(?s)stage_a.warmup \(deduction\).*epochz"),
    ("stage_a.specialists.abduction.warmup=3", r"stage_a.specialists.abduction.warmup: must be a section"),
])
def test_bad_warmup_settings_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        stage_a_configs(load_config(PipelineConfig, None, [override]))


def test_warmup_of_a_family_without_worked_solutions_is_refused():
    pc = load_config(PipelineConfig, None, ["stage_a.specialists={toy: {tasks: {families: [uppercase]}}}",
                                           "stage_a.warmup.enabled=true"])
    with pytest.raises(ConfigError, match=r"(?s)stage_a.warmup \(toy\).*families.*worked solutions"):
        stage_a_configs(pc)
