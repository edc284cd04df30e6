"""Which checkpoint is evaluated on which suite, per-suite settings, merged results (pure)."""

from __future__ import annotations

import pytest

from peirce.config import ConfigError, load_config
from peirce.pipeline.config import EvalStage, PipelineConfig
from peirce.pipeline.evaluate import Checkpoint, eval_plan, merge_results, suite_dir, suite_settings

SUITES = ["maa-deduction", "maa-induction", "maa-abduction", "math-sample"]


def _ckpts():
    return [Checkpoint("base", "base", "/b"), Checkpoint("deduction-warmup", "warmup", "/dw", ("deduction",)),
            Checkpoint("deduction", "specialist", "/d", ("deduction",)),
            Checkpoint("induction", "specialist", "/i", ("induction",)),
            Checkpoint("merged", "merged", "/m"), Checkpoint("domain-from-merged", "domain", "/x")]


def test_base_and_merged_everywhere_specialists_on_their_own_task_domain_on_the_rest():
    plan = {it.name: it.suites for it in eval_plan(EvalStage(suites=SUITES), _ckpts())}
    assert plan["base"] == plan["merged"] == tuple(SUITES)
    assert plan["deduction-warmup"] == plan["deduction"] == ("maa-deduction",)
    assert plan["induction"] == ("maa-induction",)
    assert plan["domain-from-merged"] == ("math-sample",)


def test_every_suite_and_fallbacks():
    every = {it.name: it.suites for it in eval_plan(EvalStage(suites=SUITES, every_suite=True), _ckpts())}
    assert set(every.values()) == {tuple(SUITES)}
    only_math = {it.name: it.suites for it in eval_plan(EvalStage(suites=["math-sample"]), _ckpts())}
    assert only_math["deduction"] == ("math-sample",)  # no own suite listed: evaluated on what there is
    only_maa = {it.name: it.suites for it in eval_plan(EvalStage(suites=["maa-deduction"]), _ckpts())}
    assert only_maa["domain-from-merged"] == ("maa-deduction",)


def test_per_suite_settings_override_the_stage_defaults():
    ev = EvalStage(suites=SUITES, levels=[1], per_level=100, limit=100, max_tokens=160,
                   per_suite={"maa-induction": {"levels": [1, 2, 3], "max_tokens": 176}})
    assert suite_settings(ev, "maa-deduction") == {"levels": [1], "per_level": 100, "limit": 100, "max_tokens": 160}
    assert suite_settings(ev, "maa-induction") == {"levels": [1, 2, 3], "per_level": 100, "limit": 100,
                                                   "max_tokens": 176}


def test_default_config_evaluates_at_least_100_problems_per_maa_suite():
    """The comparisons need >= 100 problems; induction's L1/L2 test splits hold 11 and 31, so
    its suite must reach into L3 (generation is what the real eval does, a second or two)."""
    from peirce.eval.suites import SuiteOptions, load_suite

    ev = load_config(PipelineConfig, "configs/default.yaml").eval
    for suite in ("maa-deduction", "maa-induction", "maa-abduction"):
        o = suite_settings(ev, suite)
        tasks = load_suite(suite, SuiteOptions(levels=tuple(o["levels"]), per_level=o["per_level"],
                                               limit=o["limit"])).tasks
        assert len(tasks) >= 100, suite


@pytest.mark.parametrize("override, match", [
    ("eval.per_suite={maa-nope: {limit: 3}}", "eval.per_suite: .*maa-nope"),
    ("eval.per_suite={maa-deduction: {levels: [9]}}", "levels"),
    ("eval.per_suite={maa-deduction: {limit: 0}}", "limit"),
])
def test_bad_per_suite_settings_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(PipelineConfig, None, [override])


def test_suite_dir_is_a_safe_folder_name():
    assert suite_dir("maa-deduction") == "maa-deduction"
    assert "/" not in suite_dir("file:math500:/data/x/../test.jsonl") and ":" not in suite_dir("file:a:b")


def test_merge_results_joins_single_suite_results():
    from pipeline_helpers import make_result

    a = make_result("m", {"maa-deduction": {"pass@1": 0.5}})
    b = make_result("m", {"math-sample": {"pass@1": 0.25}})
    merged = merge_results("/m", [a, b])
    assert set(merged.suites) == {"maa-deduction", "math-sample"} and merged.seconds == 2.0
