"""The stage-A warm-up in Ray, for real: one SFT task per specialist (tiny model), at most
`max_concurrent` at once, checkpoints an RL run can start from, and a re-run that skips."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_warmups_run_as_ray_tasks_and_rerun_skips(tmp_path, tiny_model_dir, caplog):
    from peirce.actors.runtime import ensure_ray
    from peirce.config import load_config
    from peirce.pipeline.config import PipelineConfig
    from peirce.pipeline.resolve import specialist_configs, stage_a_configs
    from peirce.pipeline.warmup import run_warmups

    pc = load_config(PipelineConfig, "configs/smoke.yaml",
                     [f"run_dir={tmp_path}", "stage_a.specialists={deduction: {}, induction: {}}"])
    specs, warmups = stage_a_configs(pc)
    ensure_ray()
    resources = {n: (c.learner.num_cpus, c.learner.num_gpus) for n, c in specs.items()}
    models = run_warmups(warmups, resources=resources, max_concurrent=1)
    assert set(models) == {"deduction", "induction"}
    for name, path in models.items():
        assert (path / "config.json").exists() and (path / "model.safetensors").exists()
        assert json.loads((tmp_path / "stage_a" / name / "warmup" / "DONE").read_text())["model_dir"] == str(path)
    assert specialist_configs(pc, {n: str(p) for n, p in models.items()})["induction"].model.path == \
        str(models["induction"])
    mtimes = {p: p.stat().st_mtime for p in tmp_path.rglob("model.safetensors")}
    with caplog.at_level("INFO", logger="peirce.pipeline.warmup"):
        assert run_warmups(warmups, resources=resources) == models
    assert "stage_a/deduction warm-up already complete; skipping" in caplog.text
    assert {p: p.stat().st_mtime for p in tmp_path.rglob("model.safetensors")} == mtimes
