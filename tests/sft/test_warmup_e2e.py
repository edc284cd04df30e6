"""A warm-up teaches the answer format, end to end and for real: SFT on the tiny random Llama
(DeepSpeed, in-process) on induction L1 worked solutions, then greedy decodes of the base
model and of the warm-up checkpoint through the pipeline's evaluation (one vLLM engine,
weights swapped in place) on the held-out L1 test split.

The tiny model (2 layers, width 64) needs ~170 steps to learn the format: in probes 43-86
steps left it at 0/11, 172 steps (344 examples, 2 epochs, batch 4, lr 3e-3) gave 11/11 with
fp32 decodes and 7/11 with bf16 ones (the 2-layer model's margins are within bf16 rounding),
so the test decodes in fp32 on every host kind (`eval.dtype`) and trains 3 epochs (258 steps).
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_warmup_on_the_tiny_model_raises_format_adherence(tmp_path, tiny_model_dir):
    from peirce.eval.runner import load_result
    from peirce.pipeline.comparisons import FORMAT, compare
    from peirce.pipeline.config import EvalStage
    from peirce.pipeline.evaluate import _evaluate_all
    from peirce.sft.config import SFTConfig
    from peirce.sft.loop import run_sft

    cfg = SFTConfig(name="warm", run_dir=str(tmp_path / "warm"), model="tiny", families=["induction"], levels=[1],
                    examples=344, epochs=3, lr=3e-3, batch_size=4, micro_batch_size=4, precision="fp32")
    summary = run_sft(cfg, progress=False)
    assert summary.steps >= 250 and summary.last_loss < summary.first_loss / 4

    ev = EvalStage(suites=["maa-induction"], levels=[1], per_level=50, max_tokens=160, kv_cache_gib=0.5,
                   dtype="float32")
    items = [{"name": "base", "path": str(tiny_model_dir), "suites": ["maa-induction"]},
             {"name": "warm", "path": summary.model_dir, "suites": ["maa-induction"]}]
    paths = _evaluate_all({"eval": ev.model_dump(mode="json"), "max_model_len": 1024}, items, str(tmp_path / "eval"))
    results = {name: load_result(path) for name, path in paths.items()}
    base, warm = (results[n].suites["maa-induction"] for n in ("base", "warm"))
    assert base.tasks == warm.tasks >= 10
    assert base.format_rate == 0.0
    assert warm.format_rate >= 0.8, warm
    assert compare(results, "warm", "base", "maa-induction", FORMAT).verdict == "beats"
