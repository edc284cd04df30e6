"""MAA reward: the released scheme's four totals, custom schemes, the registry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peirce.rewards.maa import MaaRewardScheme, maa_reward, score_maa
from peirce.rewards.registry import RewardResult, UnknownRewardError, get_reward, register_reward, reward_names
from peirce.tasks.base import UnknownTaskError, family_names
from peirce.tasks.dataset import generate_dataset
from peirce.tasks.prompts import TASK_INSTRUCTIONS
from peirce.testing import wrap_response, wrong_answer

FAMILIES = [f for f in family_names() if f in TASK_INSTRUCTIONS]  # the MAA logic families
pytestmark = pytest.mark.skipif(not FAMILIES, reason="no task family is registered yet")




@pytest.fixture(scope="module", params=FAMILIES)
def tasks(request):
    return generate_dataset(request.param, 2, 10, "train", seed=0)


def test_the_four_totals(tasks):
    for t in tasks:
        gold = score_maa(t.family, wrap_response(t.solution_text), t.solution_text)
        assert gold == RewardResult(3.0, True, True, t.solution_text.strip())
        wrong = score_maa(t.family, wrap_response(wrong_answer(t.solution_text)), t.solution_text)
        assert (wrong.reward, wrong.format_ok, wrong.correct) == (-0.5, True, False)
        junk = score_maa(t.family, wrap_response("no idea"), t.solution_text)
        assert (junk.reward, junk.format_ok, junk.correct, junk.answer) == (-1.0, True, None, "no idea")
        bare = score_maa(t.family, t.solution_text, t.solution_text)
        assert (bare.reward, bare.format_ok, bare.correct, bare.answer) == (-3.0, False, None, None)
        # Gold answer but a broken format: the answer part is -2 as well.
        twice = score_maa(t.family, wrap_response(t.solution_text) + "<answer>x</answer>", t.solution_text)
        assert (twice.reward, twice.format_ok, twice.correct) == (-3.0, False, None)


def test_prefill_counts_for_the_format(tasks):
    t = tasks[0]
    completion = f"reasoning</think>\n<answer>\n{t.solution_text}</answer>"
    assert score_maa(t.family, completion, t.solution_text).reward == -3.0
    assert score_maa(t.family, "<think>" + completion, t.solution_text).reward == 3.0


def test_custom_scheme(tasks):
    t = tasks[0]
    scheme = MaaRewardScheme(format_ok=0.5, format_bad=-0.25, answer_correct=1.0, answer_wrong=-0.1, answer_unparsable=-7.0)
    assert score_maa(t.family, wrap_response(t.solution_text), t.solution_text, scheme).reward == 1.5
    assert score_maa(t.family, wrap_response(wrong_answer(t.solution_text)), t.solution_text, scheme).reward == pytest.approx(0.4)
    assert score_maa(t.family, wrap_response("?"), t.solution_text, scheme).reward == -6.5
    assert score_maa(t.family, "x", t.solution_text, scheme).reward == -7.25
    assert maa_reward(scheme)(t, wrap_response(t.solution_text)).reward == 1.5


def test_registry(tasks, monkeypatch):
    from peirce.rewards import registry

    t = tasks[0]
    fn = get_reward("maa")
    assert "maa" in reward_names()
    assert fn(t, wrap_response(t.solution_text)).reward == 3.0
    with pytest.raises(UnknownRewardError, match="unknown reward 'nope'; valid: .*maa"):
        get_reward("nope")

    monkeypatch.setattr(registry.REWARDS, "_entries", dict(registry.REWARDS._entries))  # keep the test's name local

    @register_reward("test-constant")
    def constant(task, turn):
        return RewardResult(0.0, True, None)

    assert get_reward("test-constant") is constant
    with pytest.raises(ValueError, match="already registered"):
        register_reward("maa")(constant)


def test_unknown_task_is_a_clear_error():
    with pytest.raises(UnknownTaskError, match="unknown task family 'nope'"):
        score_maa("nope", "<answer>1</answer>", "1")


_GOLD = {name: generate_dataset(name, 1, 1, "test", seed=0)[0].solution_text for name in FAMILIES}


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/answerthink()1AB True False reachable\n")), max_size=200))
def test_any_response_gets_one_of_the_four_totals(text):
    for name, gold in _GOLD.items():
        assert score_maa(name, text, gold).reward in (3.0, -0.5, -1.0, -3.0)
        assert score_maa(name, text + "\n" + wrap_response(gold), gold).reward in (3.0, -0.5, -1.0, -3.0)
