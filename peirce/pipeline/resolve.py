"""Turn a PipelineConfig into the validated TrainConfig of every RL run and the SFTConfig of
every stage-A warm-up (pure).

Layers, later wins: stage defaults < smoke budget (profile=smoke) < pipeline `common`
< stage `common` < the run's own section < what the pipeline fixes (name, run_dir,
starting model). Keys may be nested maps or dotted strings; string values are read as
YAML scalars, as on the command line.

Warm-ups: WARMUP_DEFAULTS < smoke warm-up budget < what follows from the specialist's
RL config (max_seq_len = model.max_model_len, precision, seed) < `stage_a.warmup` < the
specialist's own `warmup` key < what the pipeline fixes (name `<specialist>-warmup`,
run_dir `<specialist run_dir>/warmup`, the base model, and the RL run's task families
and prompt style, so the warm-up teaches the very prompts RL samples from). A specialist
with a warm-up starts its RL from the warm-up's checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peirce.config import ConfigError, TrainConfig
from peirce.config.loader import LOAD_CONTEXT, validate
from peirce.config.errors import short
from peirce.config.profiles import SMOKE_BUDGET, SMOKE_WARMUP
from peirce.config.safe_yaml import load_yaml
from peirce.pipeline.config import PipelineConfig
from peirce.sft.config import SFTConfig

STAGE_A_DEFAULTS: dict[str, Any] = {
    "tasks.levels": [1, 2], "tasks.prompt_style": "chat_template", "curriculum.mode": "epochs",
    "algorithm.advantage": "reinforce_pp", "algorithm.kl_coef": 0.001, "algorithm.entropy_coef": 0.001,
    "rollout.temperature": 0.7,
}
# One epoch of 48 examples at lr 3e-4 in steps of 4: 32 examples (8 steps) took greedy format
# adherence of SmolLM2-135M from 0 to 32/32 (deduction L1) and 30/32 (abduction L1) here, 16
# examples (4 steps) left it at 0/32 (fp32, vLLM greedy); 48 leaves a margin.
WARMUP_DEFAULTS: dict[str, Any] = {
    "levels": [1], "examples": 48, "epochs": 1, "lr": 3.0e-4, "batch_size": 4, "micro_batch_size": 4,
}
STAGE_C_DEFAULTS: dict[str, Any] = {
    "tasks.families": ["math"], "tasks.levels": [1], "tasks.prompt_style": "chat_template",
    "algorithm.advantage": "grpo", "algorithm.kl_coef": 0.001, "rollout.temperature": 1.0,
}


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    if isinstance(value, Mapping):  # a nested section: same as its dotted keys
        for k, v in value.items():
            _set(tree, f"{dotted}.{k}", v)
        return
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = load_yaml(value, dotted) if isinstance(value, str) else value


def merge_layers(*layers: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            _set(tree, str(key), value)
    return tree


def _validate(tree: dict[str, Any], where: str, pending: tuple[str, ...] = ()) -> TrainConfig:
    """Validate with the load-time checks; `pending` paths are made by an earlier stage (the merge)."""
    return validate(TrainConfig, tree, where, {**LOAD_CONTEXT, "pending_paths": pending})


def _base(pc: PipelineConfig) -> list[Mapping[str, Any]]:
    return [SMOKE_BUDGET] if pc.profile == "smoke" else []


def base_model(pc: PipelineConfig) -> str:
    """The starting model: `profile: smoke` means the tiny random Llama unless one is named."""
    if pc.profile == "smoke" and "base_model" not in pc.model_fields_set:
        return "tiny"
    return pc.base_model


def _split_warmup(name: str, section: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A specialist's section as (its RL overrides, its `warmup` overrides)."""
    rl: dict[str, Any] = {}
    warm: dict[str, Any] = {}
    for key, value in section.items():
        if key == "warmup":
            if not isinstance(value, Mapping):
                raise ConfigError(f"stage_a.specialists.{name}.warmup: must be a section, got {short(value)}")
            warm.update(value)
        elif str(key).startswith("warmup."):
            warm[str(key).removeprefix("warmup.")] = value
        else:
            rl[key] = value
    return rl, warm


def _warmup_config(pc: PipelineConfig, name: str, rl: TrainConfig, own: Mapping[str, Any]) -> SFTConfig | None:
    """The specialist's warm-up, or None when it has none (`enabled` false, or unset and not the embedded model)."""
    smoke = [SMOKE_WARMUP] if pc.profile == "smoke" else []
    tree = merge_layers(WARMUP_DEFAULTS, *smoke,
                        {"max_seq_len": rl.model.max_model_len, "precision": rl.learner.precision,
                         "seed": rl.trainer.seed},
                        pc.stage_a.warmup, own,
                        {"name": f"{name}-warmup", "run_dir": str(Path(rl.run_dir) / "warmup"),
                         "model": base_model(pc), "families": list(rl.tasks.families),
                         "prompt_style": rl.tasks.prompt_style})
    enabled = tree.pop("enabled", None)
    if enabled is None:
        enabled = base_model(pc) == "embedded"
    if not isinstance(enabled, bool):
        raise ConfigError(f"stage_a.warmup.enabled ({name}): must be true, false or unset, got {short(enabled)}")
    return validate(SFTConfig, tree, f"stage_a.warmup ({name})") if enabled else None


def stage_a_configs(pc: PipelineConfig, warmup_models: Mapping[str, str] | None = None
                    ) -> tuple[dict[str, TrainConfig], dict[str, SFTConfig]]:
    """(RL config, warm-up config) of every specialist; a specialist with a warm-up starts from
    `warmup_models[name]` (its checkpoint) or, before it exists, from its run_dir (pending)."""
    runs: dict[str, TrainConfig] = {}
    warmups: dict[str, SFTConfig] = {}
    root = Path(pc.run_dir) / "stage_a"
    for name, section in pc.stage_a.specialists.items():
        rl_section, warm_section = _split_warmup(name, section)
        tree = merge_layers(STAGE_A_DEFAULTS, {"tasks.families": [name]}, *_base(pc), pc.common,
                            pc.stage_a.common, rl_section,
                            {"name": name, "run_dir": str(root / name), "model.path": base_model(pc)})
        where = f"stage_a.specialists.{name}"
        cfg = _validate(tree, where)
        warm = _warmup_config(pc, name, cfg, warm_section)
        if warm is not None:
            start = (warmup_models or {}).get(name, warm.run_dir)
            tree["model"]["path"] = str(start)
            cfg = _validate(tree, where, pending=(str(start),))
            warmups[name] = warm
        runs[name] = cfg
    return runs, warmups


def specialist_configs(pc: PipelineConfig, warmup_models: Mapping[str, str] | None = None) -> dict[str, TrainConfig]:
    return stage_a_configs(pc, warmup_models)[0]


def warmup_configs(pc: PipelineConfig) -> dict[str, SFTConfig]:
    """The warm-up of every specialist that has one (see the module docstring for the layers)."""
    return stage_a_configs(pc)[1]


def domain_configs(pc: PipelineConfig, merged_dir: str | None) -> dict[str, TrainConfig]:
    out = {}
    root = Path(pc.run_dir) / "stage_c"
    for start in pc.stage_c.starts:
        model = base_model(pc) if start == "base" else merged_dir or str(Path(pc.run_dir) / "stage_b" / "merged")
        name = f"domain-from-{start}"
        smoke = [{**SMOKE_BUDGET, "tasks.levels": [1]}] if pc.profile == "smoke" else []
        tree = merge_layers(STAGE_C_DEFAULTS, *smoke, pc.common, pc.stage_c.train,
                            {"name": name, "run_dir": str(root / name), "model.path": model})
        out[name] = _validate(tree, f"stage_c.train ({name})", pending=(model,) if start == "merged" else ())
    return out


def resolve_all(pc: PipelineConfig) -> dict[str, TrainConfig]:
    """Every RL run's config, validated before anything starts (`peirce run`, `--check`);
    the merged model stage C starts from does not exist yet, and need not."""
    return {**specialist_configs(pc), **domain_configs(pc, None)}
