"""MASA end to end on the real engine (tiny random Llama; Ray, vLLM, DeepSpeed, ZeroMQ):
configs/masa-smoke.yaml runs its parallel steps, switches to sequential, and every step's
metrics carry the meta fields. In sequential mode each solution request's max_tokens is
the cutoff's (the random model predicts nothing valid, so the cutoff's upper clamp, 8),
below rollout.max_tokens, and no solution response is longer than its request allowed. An
expert SFT step (the learner's sft verb, its own lr) runs every 2 steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peirce.config import TrainConfig, load_config
from peirce.masa.expert import ExpertExample
from peirce.masa.prompt import meta_prompt
from peirce.trainer.orchestrator import Orchestrator
from peirce.trainer.run_dir import RunDir

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "masa-smoke.yaml"
META_FIELDS = {"meta/reward_mean", "meta/reward_length", "meta/reward_pass_rate", "meta/reward_notions",
               "meta/calibration_error", "meta/token_share", "meta/prompts_gated", "meta/gating_precision",
               "meta/gating_recall", "meta/tokens_saved_gating", "meta/tokens_saved_cutoff",
               "meta/solution_max_tokens_mean", "meta/solution_max_tokens_max"}


def test_masa_smoke_runs_parallel_then_sequential_with_lowered_max_tokens(ray_runtime, tmp_path):
    cfg = load_config(TrainConfig, CONFIG, [f"run_dir={tmp_path / 'masa'}"])
    meta = cfg.algorithm.meta
    orch = Orchestrator(cfg, progress=False)
    # The random model never writes a valid prediction, so no expert example arises by
    # itself: seed one (as best_expert builds them) so the SFT verb runs at step 2.
    orch.planner.expert.add(ExpertExample(prompt_id="seed", prompt=meta_prompt("spell cat in capitals", meta),
                                          target='<meta>easy</meta>\n{"notions": [], "pass_rate": 8, '
                                                 '"solution_length": 3}', score=1.0, step=0))
    orch.run()
    rows = RunDir(tmp_path / "masa").read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(META_FIELDS <= set(r) for r in rows), sorted(set(rows[0]))
    for r in rows:
        # both groups trained: G solutions and M meta samples per prompt
        assert r["samples"] == cfg.rollout.prompts_per_step * meta.solution_rollouts
        assert r["meta/samples"] == cfg.rollout.prompts_per_step * meta.meta_rollouts
        assert 0 < r["meta/token_share"] < 1 and 0 <= r["meta/reward_mean"] <= 1
    # admissions of the first steps run parallel (full rollout.max_tokens); the last step's
    # prompts were admitted after switch_step, so their requests carry the cutoff
    assert rows[0]["meta/solution_max_tokens_max"] == cfg.rollout.max_tokens
    last = rows[-1]
    assert last["meta/solution_max_tokens_max"] == meta.cutoff.max_tokens < cfg.rollout.max_tokens
    assert last["meta/tokens_saved_cutoff"] > 0
    assert last["response_length_mean"] <= meta.cutoff.max_tokens
    # the expert SFT step ran after step 2 on the real learner and took a policy version
    assert rows[1]["meta/sft_examples"] == 1 and rows[1]["meta/sft_loss"] > 0
    assert [r["policy_version"] for r in rows] == [1, 2, 4, 5]
    ledger = [json.loads(line) for line in (Path(cfg.run_dir) / "ledger.jsonl").read_text().splitlines()]
    assert len(ledger) == 4 * cfg.rollout.prompts_per_step  # one entry (two groups) per prompt


DAPO_CONFIG = CONFIG.with_name("masa-dapo-smoke.yaml")


def test_the_shipped_masa_dapo_config_trains_every_step(ray_runtime, tmp_path):
    """configs/masa-dapo-smoke.yaml as shipped: dynamic sampling filters the meta halves whose
    rewards do not vary, yet every step trains. (It once ended 'done' at step 0: overlong
    filtering masked every solution of the random model, which never samples EOS.)"""
    cfg = load_config(TrainConfig, DAPO_CONFIG, [f"run_dir={tmp_path / 'dapo'}"])
    assert Orchestrator(cfg, progress=False).run()["step"] == cfg.trainer.max_steps
    run = RunDir(tmp_path / "dapo")
    rows = run.read_metrics()
    assert [r["step"] for r in rows] == list(range(1, cfg.trainer.max_steps + 1))
    assert all(r["samples"] > 0 for r in rows)
    summary = run.read_summary()
    assert summary["status"] == "done" and summary["ended_early"] is None
