"""Turn a PipelineConfig into the validated TrainConfig of every RL run (pure).

Layers, later wins: stage defaults < smoke budget (profile=smoke) < pipeline `common`
< stage `common` < the run's own section < what the pipeline fixes (name, run_dir,
starting model). Keys may be nested maps or dotted strings; string values are read as
YAML scalars, as on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peirce.config import ConfigError, TrainConfig
from peirce.config.loader import LOAD_CONTEXT, validate
from peirce.config.profiles import SMOKE_BUDGET
from peirce.config.safe_yaml import load_yaml
from peirce.pipeline.config import PipelineConfig

STAGE_A_DEFAULTS: dict[str, Any] = {
    "tasks.levels": [1, 2], "tasks.prompt_style": "chat_template", "curriculum.mode": "epochs",
    "algorithm.advantage": "reinforce_pp", "algorithm.kl_coef": 0.001, "algorithm.entropy_coef": 0.001,
    "rollout.temperature": 0.7,
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


def specialist_configs(pc: PipelineConfig) -> dict[str, TrainConfig]:
    out = {}
    root = Path(pc.run_dir) / "stage_a"
    for name, section in pc.stage_a.specialists.items():
        tree = merge_layers(STAGE_A_DEFAULTS, {"tasks.families": [name]}, *_base(pc), pc.common,
                            pc.stage_a.common, section,
                            {"name": name, "run_dir": str(root / name), "model.path": base_model(pc)})
        out[name] = _validate(tree, f"stage_a.specialists.{name}")
    return out


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
