"""Memory preflight: the estimator's arithmetic, a config too big for the budget is refused
before Ray starts with a message naming what to cut, and parameters counted from headers."""

from __future__ import annotations

import pytest

from peirce.config import load_config
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.preflight import (GIB, Footprint, PreflightError, check_memory, engine_gib, estimate, learner_gib,
                                       param_count, run_items, run_preflight)
from peirce.pipeline.resolve import domain_configs, stage_a_configs

P = 134_515_008  # SmolLM2-135M
FP = Footprint()


def test_learner_and_engine_arithmetic():
    assert learner_gib(GIB, bf16=False, ref_model=False, runtime=0) == 16  # fp32 weights, grads, AdamW m+v
    assert learner_gib(GIB, bf16=True, ref_model=False, runtime=0) == 18  # + fp32 master, bf16 weights
    assert learner_gib(GIB, bf16=False, ref_model=True, runtime=1) == 21  # + fp32 reference copy + runtime
    assert engine_gib(GIB, 4, kv_cache_gib=0.5, runtime=1) == 9.5  # engine copy + weight inbox + KV + runtime
    assert engine_gib(GIB, 2, kv_cache_gib=8, runtime=1, on_gpu=True) == 1  # weights and KV live on the GPU


def test_one_run_holds_learner_engines_rewards_and_a_controller():
    pc = load_config(PipelineConfig, "configs/default.yaml", ["common.rollout.workers=2", "common.reward.workers=3"])
    cfg = stage_a_configs(pc)[0]["deduction"]
    items = {i.what: i for i in run_items("deduction", cfg, P, native_bf16=False)}
    assert items["learner"].each_gib == pytest.approx(P * 16 / GIB + FP.learner_runtime(P))
    assert items["rollout engine (kv_cache 0.5 GiB)"].count == 2
    assert items["reward worker"].count == 3 and items["controller"].count == 1


def test_stage_estimate_sums_the_runs_that_share_it():
    pc = load_config(PipelineConfig, "configs/default.yaml", ["max_concurrent_runs=null"])
    specs, warm = stage_a_configs(pc)
    needs = {n.stage: n.total_gib for n in estimate(pc, specs, warm, domain_configs(pc, None), P, False)}
    one_run = sum(i.total_gib for i in run_items("deduction", specs["deduction"], P, False))
    assert needs["stage_a"] == pytest.approx(FP.driver + 3 * one_run)
    assert needs["stage_c"] == pytest.approx(FP.driver + 2 * one_run)  # two domain runs, same shape
    two = {n.stage: n.total_gib for n in estimate(pc, specs, warm, {}, P, False, at_once=2)}
    assert two["stage_a"] == pytest.approx(FP.driver + 2 * one_run) and "stage_c" not in two


def test_oversized_config_is_refused_with_what_to_cut():
    pc = load_config(PipelineConfig, "configs/default.yaml", ["max_concurrent_runs=null"])
    with pytest.raises(PreflightError) as err:
        check_memory(pc, 15.6, "available", P, native_bf16=False)
    msg = str(err.value)
    assert msg.startswith("stage_a needs ~20.5 GiB of 15.6 GiB available: 3 x 3.2 GiB learner")
    assert "lower rollout.kv_cache_gib (3 x 0.5 GiB) or rollout.workers" in msg
    assert "run fewer specialists at once (max_concurrent_runs=2: ~14.0 GiB)" in msg


def test_shipped_default_fits_16_gib_and_a_tiny_budget_says_even_one_at_a_time_is_too_much():
    pc = load_config(PipelineConfig, "configs/default.yaml")
    needs = check_memory(pc, 16.0, "(budget)", P, native_bf16=False)
    assert max(n.total_gib for n in needs) <= 16.0
    with pytest.raises(PreflightError, match=r"max_concurrent_runs=1 still needs ~7.5 GiB"):
        check_memory(pc, 4.0, "(budget)", P, native_bf16=False)


def test_param_count_reads_safetensors_headers(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"a": np.zeros((3, 5), np.float32), "b": np.zeros((7,), np.float16)}, str(tmp_path / "x.safetensors"))
    save_file({"c": np.zeros((2, 2, 2), np.float32)}, str(tmp_path / "y.safetensors"))
    assert param_count(tmp_path) == 15 + 7 + 8
    with pytest.raises(PreflightError, match="no \\*.safetensors"):
        param_count(tmp_path / "missing")


def test_embedded_model_parameter_count(embedded_model_dir):
    assert param_count(embedded_model_dir) == P


def test_peirce_run_refuses_before_ray_starts(capsys):
    import ray

    from peirce.cli.main import main

    assert main(["run", "configs/default.yaml", "--memory-budget-gib", "4"]) == 2
    err = capsys.readouterr().err
    assert "peirce run: not enough memory: stage_a needs ~" in err and "of 4.0 GiB (--memory-budget-gib)" in err
    assert not ray.is_initialized()


def test_preflight_is_skipped_when_joining_a_cluster(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    pc = load_config(PipelineConfig, "configs/default.yaml")
    assert run_preflight(pc, 0.001) == "memory preflight skipped: joining a Ray cluster"
