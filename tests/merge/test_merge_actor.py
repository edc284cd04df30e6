"""MergeActor under a real local Ray runtime (slow: Ray start-up plus three merges)."""

from __future__ import annotations

import pytest
import torch
from merge_helpers import load_state

from peirce.config import ConfigError
from peirce.merge import MergeError, parse_merge_config, run_merge


@pytest.fixture(scope="module")
def ray_rt():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow
def test_actor_merges_like_run_merge(ray_rt, tmp_path, cfg_dict):
    from peirce.actors.merge_actor import MergeActor

    actor = MergeActor.remote()
    try:
        path = ray_rt.get(actor.merge.remote(cfg_dict, str(tmp_path / "by_actor")), timeout=300)
        assert path == str((tmp_path / "by_actor").resolve())
        local = run_merge(parse_merge_config(cfg_dict), tmp_path / "local")
        a, b = load_state(path), load_state(local)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)

        bad = {**cfg_dict, "method": "ties"}
        with pytest.raises(ConfigError, match="base_model is required for method=ties"):
            ray_rt.get(actor.merge.remote(bad, str(tmp_path / "bad")), timeout=60)
        missing = {**cfg_dict, "models": {**cfg_dict["models"], "deduction": str(tmp_path / "gone")}}
        with pytest.raises(MergeError, match=r"models\.deduction: .*gone.* does not exist"):
            ray_rt.get(actor.merge.remote(missing, str(tmp_path / "bad")), timeout=60)
        # the actor survives bad calls
        assert ray_rt.get(actor.merge.remote(cfg_dict, str(tmp_path / "again")), timeout=300)
    finally:
        ray_rt.kill(actor)
