"""The no-learning-signal guard on batches scored by the real MAA reward.

Responses are scored by `score_maa` against real generated deduction puzzles, so the
guard reads the same `reward`, `format_ok` and `correct` a run's reward workers send,
hostile responses (tags nested, repeated, cut off, huge) included.
"""

from __future__ import annotations

import numpy as np
import pytest

from peirce.rewards.maa import score_maa
from peirce.tasks.dataset import generate_dataset
from peirce.testing import wrap_response, wrong_answer
from peirce.trainer.signal_guard import CAUSES, SignalGuard, has_signal, infer_cause, signal_scope
from peirce.transport.wire import RolloutSample, ScoredSample

TASKS = generate_dataset("deduction", 1, 4, "train", seed=0)
HOSTILE_UNFORMATTED = [
    "",  # nothing at all
    "the answer is (1) A is True",  # no tags
    "<think>reasoning</think>\n<answer>\n",  # cut off by max_tokens: no </answer>
    "<think>x</think><answer><answer>(1) A is True</answer></answer>",  # nested
    "<answer>x</answer><think>y</think>",  # wrong order
    "<think>" * 10_000,  # huge and broken
    "<think>a</think><answer>b</answer><answer>c</answer>",  # two answers
]


def scored(task, response: str) -> ScoredSample:
    r = score_maa(task.family, response, task.solution_text)
    sample = RolloutSample(task_id=task.id, family=task.family, level=task.level, group_id=task.id, sample_index=0,
                           prompt_token_ids=np.zeros(2, np.int32), response_token_ids=np.zeros(1, np.int32),
                           response_logprobs=np.zeros(1, np.float32), policy_version=0)
    return ScoredSample(sample=sample, reward=r.reward, correct=bool(r.correct), format_ok=r.format_ok)


def gold(task):
    return scored(task, wrap_response(task.solution_text))


def wrong(task):
    return scored(task, wrap_response(wrong_answer(task.solution_text)))


def unformatted(task, i=0):
    return scored(task, HOSTILE_UNFORMATTED[i % len(HOSTILE_UNFORMATTED)])


def batch(make, n=4):
    return [[make(t) for _ in range(n)] for t in TASKS]


def test_hostile_responses_all_score_as_format_failures():
    for i in range(len(HOSTILE_UNFORMATTED)):
        s = unformatted(TASKS[0], i)
        assert (s.reward, s.format_ok, s.correct) == (-3.0, False, False), HOSTILE_UNFORMATTED[i][:60]


def test_a_mixed_group_has_signal_and_uniform_groups_have_none():
    mixed = [[gold(TASKS[0]), wrong(TASKS[0])]]
    assert has_signal(mixed, "group") and has_signal(mixed, "batch")
    uniform = [[gold(TASKS[0])] * 2, [wrong(TASKS[1])] * 2]
    assert not has_signal(uniform, "group")
    assert has_signal(uniform, "batch")  # a batch baseline still separates the two prompts


def test_scope_follows_the_estimator():
    assert signal_scope("reinforce_pp") == "batch"
    assert {signal_scope(a) for a in ("grpo", "rloo", "reinforce_pp_group")} == {"group"}


@pytest.mark.parametrize("make, temperature, cause", [
    (lambda t: unformatted(t, TASKS.index(t)), 0.7, "format_never_produced"),
    (wrong, 0.7, "task_too_hard"),
    (gold, 0.7, "all_solved"),
    (gold, 0.0, "temperature_zero"),  # greedy decoding explains identical groups first
    (wrong, 0.0, "temperature_zero"),
])
def test_cause_is_read_from_the_batch(make, temperature, cause):
    b = batch(make)
    assert not has_signal(b, "group")
    assert infer_cause(b, temperature) == cause


def test_uniform_groups_of_mixed_outcomes_and_single_samples():
    b = [[gold(TASKS[0])] * 3, [wrong(TASKS[1])] * 3, [unformatted(TASKS[2])] * 3]
    assert infer_cause(b, 0.7) == "uniform_groups"
    singles = [[gold(TASKS[0])], [wrong(TASKS[1])]]
    assert infer_cause(singles, 0.7, "group") == "single_sample_groups"
    assert infer_cause([[wrong(TASKS[0])], [wrong(TASKS[1])]], 0.7, "batch") == "task_too_hard"


def test_warns_once_per_episode_after_window_steps():
    g = SignalGuard(window=3, temperature=0.7)
    dead, alive = batch(lambda t: unformatted(t, 1)), [[gold(TASKS[0]), wrong(TASKS[0])]]
    verdicts = [g.observe(step, dead) for step in range(1, 7)]
    assert [v.streak for v in verdicts] == [1, 2, 3, 4, 5, 6]
    assert [v.no_signal for v in verdicts] == [False, False, True, True, True, True]
    warnings = [v.warning for v in verdicts if v.warning]
    assert len(warnings) == 1 and verdicts[2].warning
    assert "3 consecutive learner steps" in warnings[0] and "format-failure value -3" in warnings[0]
    assert "<answer>" in warnings[0]
    back = g.observe(7, alive)
    assert back.has_signal and back.streak == 0 and not back.no_signal
    assert back.recovered and "after 6 steps" in back.recovered and "steps 1-6" in back.recovered
    # a second episode warns again, with its own cause
    second = [g.observe(s, batch(gold)) for s in (8, 9, 10)]
    assert second[-1].warning and "solved" in second[-1].warning
    assert [e["cause"] for e in g.episodes] == ["format_never_produced", "all_solved"]
    assert g.summary() == {"no_signal": True, "no_signal_at_end": True, "no_signal_steps": 9, "no_signal_window": 3,
                           "no_signal_episodes": [
                               {"start": 1, "end": 6, "steps": 6, "cause": "format_never_produced"},
                               {"start": 8, "end": None, "steps": 3, "cause": "all_solved"}]}


def test_short_stretches_never_warn_and_record_fields():
    g = SignalGuard(window=3, temperature=0.7)
    dead, alive = batch(wrong), [[gold(TASKS[0]), wrong(TASKS[0])]]
    out = [g.observe(s, b) for s, b in enumerate([dead, dead, alive, dead, dead, alive], start=1)]
    assert not any(v.warning or v.no_signal for v in out)
    assert out[1].record() == {"no_signal_steps": 2, "no_signal": False, "no_signal_cause": "task_too_hard"}
    assert out[2].record() == {"no_signal_steps": 0, "no_signal": False, "no_signal_cause": None}
    assert g.summary()["no_signal"] is False and g.summary()["no_signal_steps"] == 4


def test_window_zero_disables_warnings_but_still_counts():
    g = SignalGuard(window=0)
    out = [g.observe(s, batch(wrong)) for s in range(1, 20)]
    assert not any(v.warning or v.no_signal for v in out)
    assert g.total == 19 and g.summary()["no_signal"] is False
    with pytest.raises(ValueError, match="trainer.no_signal_steps: must be >= 0"):
        SignalGuard(window=-1)


def test_state_survives_a_resume():
    g = SignalGuard(window=2, temperature=0.7)
    for s in (1, 2, 3):
        g.observe(s, batch(wrong))
    resumed = SignalGuard(window=2, temperature=0.7)
    resumed.load_state_dict(g.state_dict())
    v = resumed.observe(4, batch(wrong))
    assert v.streak == 4 and v.no_signal and v.warning is None  # same episode: no second warning
    assert resumed.episodes == [{"start": 1, "end": None, "steps": 4, "cause": "task_too_hard"}]


def test_every_cause_has_an_explanation():
    for cause in CAUSES:
        assert CAUSES[cause].format(reward=-3.0)
