"""Expert behaviour cloning: the rewritten target, the choice of trajectory, the FIFO buffer."""

import json

import msgspec

from peirce.masa.config import ExpertConfig
from peirce.masa.expert import (ExpertBuffer, ExpertExample, best_expert, mean_correct_length, rewritten_target,
                                true_pass_count)
from peirce.masa.types import MetaPrediction, MetaReward, Solution

SOLS = [Solution("a", True, 100), Solution("b", True, 151), Solution("c", False, 900), Solution("d", False, 20)]


def r(x: float) -> MetaReward:
    return MetaReward(reward=x, length=x, pass_rate=x, notions=x)


def test_true_pass_count_and_mean_correct_length():
    assert true_pass_count(SOLS, 8) == 4  # 2 of 4 correct -> 4 of 8
    assert true_pass_count([Solution("x", True, 1)] * 3 + [Solution("y", False, 1)] * 13, 8) == 2  # 1.5, half up
    assert true_pass_count([], 8) is None
    # mean over the *correct* solutions: (100 + 151) / 2 = 125.5 -> 126 (the released code: 251 / 4 = 62.75)
    assert mean_correct_length(SOLS) == 126
    assert mean_correct_length([Solution("c", False, 900)]) is None


def test_rewritten_target_text():
    p = MetaPrediction(found=True, notions=("parity", "modular arithmetic"), pass_rate=8, solution_length=40,
                       reasoning=" think ")
    target = rewritten_target(p, SOLS, 8)
    assert target == '<meta> think </meta>\n{"notions": ["parity", "modular arithmetic"], "pass_rate": 4, "solution_length": 126}'
    # without a correct solution the predicted length is kept; without either it is left out
    failed = [Solution("c", False, 900)]
    assert json.loads(rewritten_target(p, failed, 8).split("\n", 1)[1]) == {
        "notions": ["parity", "modular arithmetic"], "pass_rate": 0, "solution_length": 40}
    bare = rewritten_target(MetaPrediction(found=True), failed, 8)
    assert bare == '<meta></meta>\n{"notions": [], "pass_rate": 0}'


def test_best_expert_picks_the_highest_reward_above_the_floor():
    a = MetaPrediction(found=True, pass_rate=1, reasoning="a")
    b = MetaPrediction(found=True, pass_rate=2, reasoning="b")
    c = MetaPrediction(found=True, pass_rate=3, reasoning="c")
    unparsed = MetaPrediction(found=False, reasoning="u")
    ex = best_expert("p", "PROMPT", [(a, r(0.3)), (unparsed, r(0.9)), (b, r(0.7)), (c, r(0.7))], SOLS,
                     k=8, min_score=0.2, step=5)
    assert ex == ExpertExample(prompt_id="p", prompt="PROMPT", target=rewritten_target(b, SOLS, 8), score=0.7, step=5)
    assert best_expert("p", "P", [(a, r(0.1))], SOLS, k=8, min_score=0.2, step=0) is None
    assert best_expert("p", "P", [(a, r(0.2))], SOLS, k=8, min_score=0.2, step=0) is not None  # >= the floor
    assert best_expert("p", "P", [(a, r(0.9))], [], k=8, min_score=0.2, step=0) is None  # no truth


def ex(i: int) -> ExpertExample:
    return ExpertExample(prompt_id=f"p{i}", prompt="P", target="T", score=0.5, step=i)


def test_buffer_is_a_bounded_fifo_drained_when_due():
    buf = ExpertBuffer(ExpertConfig(enabled=True, every=3, buffer_size=2))
    assert not buf.due(3)  # empty: nothing to train
    for i in range(3):
        buf.add(ex(i))
    buf.add(None)
    assert len(buf) == 2 and [e.prompt_id for e in buf.snapshot()] == ["p1", "p2"]  # p0 dropped out
    assert [buf.due(s) for s in (0, 1, 2, 3, 6)] == [False, False, False, True, True]
    restored = ExpertBuffer(ExpertConfig(every=3, buffer_size=2),
                            msgspec.json.decode(msgspec.json.encode(buf.snapshot()), type=tuple[ExpertExample, ...]))
    assert restored.snapshot() == buf.snapshot()
    assert [e.prompt_id for e in buf.take()] == ["p1", "p2"] and len(buf) == 0 and not buf.due(6)
