"""evaluate() with a scripted engine (real tokenizer, real rewards), settings checks, result files.

The scripted engine answers each request with a chosen response, so the aggregation can be
checked against known counts; the real-vLLM run is in test_eval_e2e.py.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from peirce.eval.runner import EvalConfigError, EvalSettings, evaluate, load_result, request_seed, split_request_id
from peirce.eval.suites import Suite, load_suite
from peirce.rollout.sampling import GenResult, SamplingSpec


class ScriptedEngine:
    """Stands in for RolloutEngine: `answer(task_id, sample_index) -> completion text`."""

    def __init__(self, tokenizer, answer, max_model_len=2048):
        self.tokenizer, self.answer, self.max_model_len = tokenizer, answer, max_model_len
        self.requests = []

    def generate(self, requests):
        self.requests += requests
        return [GenResult(request_id=r.request_id, sample_index=i, prompt_token_ids=r.prompt_token_ids,
                          response_token_ids=[1, 2, 3], response_logprobs=[],
                          text=self.answer(split_request_id(r.request_id)[1], i),
                          finish_reason="stop", stop_reason=None, policy_version=0)
                for r in requests for i in range(r.sampling.n)]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def gold_completion(task) -> str:
    if task.family in ("deduction", "induction", "abduction"):  # the prompt pre-fills "<think>"
        return f" thinking</think><answer>{task.solution_text}</answer>"
    return task.solution_text


def test_gold_answers_score_one_and_files_have_every_sample(tokenizer, tmp_path):
    code = load_suite("code-sample").tasks[:2]  # each code sample is a sandboxed run: keep them few
    suites = [load_suite("math-sample"), load_suite("science-sample"), Suite("code-sample", code),
              Suite("maa-induction", _maa("induction"))]
    by_id = {t.id: t for s in suites for t in s.tasks}
    engine = ScriptedEngine(tokenizer, lambda tid, i: gold_completion(by_id[tid]))
    res = evaluate("unused", suites, n=2, temperature=1.0, k_values=[1, 2], seed=7, out_dir=tmp_path, engine=engine)
    for s in suites:
        r = res.suites[s.name]
        assert r.metrics == {"pass@1": 1.0, "pass@2": 1.0, "avg@2": 1.0}, s.name
        assert (r.tasks, r.samples, r.format_rate, r.reward_errors) == (len(s.tasks), 2 * len(s.tasks), 1.0, 0)
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == sum(2 * len(s.tasks) for s in suites)
    assert {(x["suite"], x["task_id"], x["sample_index"]) for x in lines} == {
        (s.name, t.id, i) for s in suites for t in s.tasks for i in range(2)}
    maa = [x for x in lines if x["task"] == "induction"]
    assert maa and all(x["response"].startswith("<think>") and x["reward"] == 3.0 for x in maa)
    assert load_result(tmp_path / "results.json") == res
    seeds = {split_request_id(r.request_id)[1]: r.sampling.seed for r in engine.requests}
    assert seeds["math-test-0000"] == request_seed(7, "math-sample", "math-test-0000")
    assert len(set(seeds.values())) == len(seeds)


def _maa(task):
    from peirce.tasks.dataset import generate_dataset

    return generate_dataset(task, 1, 3, split="test", seed=0)


def test_pass_at_k_from_known_counts(tokenizer):
    suite = load_suite("math-sample")
    correct = {t.id: j for j, t in enumerate(suite.tasks[:4])}  # task j: first j of 4 samples right (j = 0..3)
    tasks = {t.id: t for t in suite.tasks}

    def answer(tid, i):
        return tasks[tid].solution_text if i < correct.get(tid, 0) else "\\boxed{nonsense-9999}"

    engine = ScriptedEngine(tokenizer, answer)
    res = evaluate("unused", Suite("m", suite.tasks[:4]), n=4, temperature=0.6, k_values=[1, 2, 4], engine=engine)
    m = res.suites["m"].metrics
    assert m["pass@1"] == pytest.approx((0 + 1 / 4 + 2 / 4 + 3 / 4) / 4)
    assert m["pass@2"] == pytest.approx((0 + 0.5 + (1 - 1 / 6) + 1) / 4)  # 1 - C(4-c,2)/C(4,2)
    assert m["pass@4"] == pytest.approx(3 / 4)
    assert m["avg@4"] == pytest.approx(m["pass@1"])
    r = res.suites["m"]
    assert r.correct_per_task == [0, 1, 2, 3] and r.interval_method == "bootstrap"
    assert r.level_per_task == [t.level for t in suite.tasks[:4]]
    assert set(r.intervals) == {"pass@1", "pass@2", "pass@4", "avg@4"}
    assert all(lo <= m[k] <= hi for k, (lo, hi) in r.intervals.items())


def test_greedy_results_carry_a_wilson_interval_over_problems(tokenizer):
    from peirce.eval.intervals import wilson

    suite = load_suite("math-sample")
    right = {t.id for t in suite.tasks[:3]}
    engine = ScriptedEngine(tokenizer, lambda tid, i: next(t.solution_text for t in suite.tasks if t.id == tid)
                            if tid in right else "\\boxed{nonsense-9999}")
    r = evaluate("unused", suite, engine=engine).suites["math-sample"]
    assert r.correct_per_task == [1, 1, 1] + [0] * (len(suite.tasks) - 3)
    assert r.interval_method == "wilson"
    assert r.intervals["pass@1"] == wilson(3, len(suite.tasks)).to_json()


def test_greedy_requests_have_no_seed_and_reward_errors_are_counted(tokenizer):
    suite = load_suite("code-sample")
    broken = Suite("broken", [msgspec.structs.replace(suite.tasks[0], puzzle={})])  # no tests: the reward raises
    engine = ScriptedEngine(tokenizer, lambda tid, i: "```python\npass\n```")
    res = evaluate("unused", broken, engine=engine)  # defaults: greedy, n=1
    assert engine.requests[0].sampling.seed is None and engine.requests[0].sampling.temperature == 0
    assert res.suites["broken"].reward_errors == 1 and res.suites["broken"].metrics["pass@1"] == 0.0


def test_prompt_too_long_for_the_engine_is_a_clear_error(tokenizer):
    engine = ScriptedEngine(tokenizer, lambda tid, i: "", max_model_len=8)
    with pytest.raises(EvalConfigError, match="math-test-0000.*max_model_len=8"):
        evaluate("unused", "math-sample", engine=engine)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"n": 0}, "n=0"), ({"n": 4, "temperature": 0.0}, "greedy"), ({"n": 2, "temperature": 1.0, "k_values": (4,)},
                                                                   "k <= n=2"),
    ({"k_values": ()}, "k_values"), ({"top_p": 0.0}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
    ({"prompt_style": "fancy"}, "prompt_style"), ({"temperature": -1.0}, "temperature"),
])
def test_settings_name_the_bad_value(kwargs, field):
    with pytest.raises(EvalConfigError, match=field):
        EvalSettings(**kwargs)


def test_sampling_seeds_fit_the_engine():
    assert SamplingSpec(seed=request_seed(2**40, "s" * 100, "t")).seed < 2**63


def test_all_suites_share_one_engine_batch(tokenizer):
    """Suites are generated together (one engine call when they fit `batch_tasks`), and a task
    id that two suites share still gets its own request."""
    math = load_suite("math-sample")
    suites = [math, Suite("math-again", math.tasks)]
    calls = []
    engine = ScriptedEngine(tokenizer, lambda tid, i: "\\boxed{0}")
    original = engine.generate
    engine.generate = lambda reqs: calls.append(len(reqs)) or original(reqs)
    res = evaluate("unused", suites, engine=engine, batch_tasks=64)
    assert calls == [2 * len(math.tasks)]
    assert {s: res.suites[s].samples for s in ("math-sample", "math-again")} == {
        "math-sample": len(math.tasks), "math-again": len(math.tasks)}
    evaluate("unused", suites, engine=engine, batch_tasks=3)
    assert calls[1:] == [3] * (2 * len(math.tasks) // 3) + ([2 * len(math.tasks) % 3] if 2 * len(math.tasks) % 3 else [])


@pytest.mark.parametrize("task_name,floor", [("deduction", -3.0), ("math", 0.0)])
def test_a_raising_verifier_scores_the_same_in_training_and_evaluation(task_name, floor):
    """A verifier bug once scored -3.0 in training and 0.0 in evaluation on MAA tasks."""
    import numpy as np

    from peirce.eval import runner
    from peirce.rewards import worker
    from peirce.tasks.base import Task
    from peirce.transport.wire import RolloutSample

    def broken(task, turn):
        raise ZeroDivisionError("verifier bug")

    task = Task(id="t0", family=task_name, level=1, split="test", puzzle={}, puzzle_text="p", solution_text="s")
    sample = RolloutSample(task_id="t0", family=task_name, level=1, group_id="g", sample_index=0,
                           prompt_token_ids=np.arange(3), response_token_ids=np.arange(2),
                           response_logprobs=np.zeros(2, np.float32), policy_version=0, completion="x")
    trained = worker._score_one(broken, task, sample)
    evaluated, err = runner._score_one(lambda name: broken, task, "x")
    assert trained.reward == evaluated.reward == floor and "ZeroDivisionError" in err
    assert not trained.correct and not evaluated.format_ok
