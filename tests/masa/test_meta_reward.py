"""The meta reward against hand-computed cases."""

import math

import pytest

from peirce.masa.notions import notion_score, scored_notions, singularise
from peirce.masa.reward import length_score, meta_reward, pass_rate_score, score_response
from peirce.masa.types import MetaPrediction, Solution

PROBLEM = "Find the remainder when 2^100 is divided by 7."
SOLUTIONS = [
    Solution("Using modular arithmetic and Fermat's little theorem, 2^100 = 2 (mod 7).", True, 100),
    Solution("By modular arithmetic the cycles of powers of 2 repeat every 3: answer 2.", True, 150),
    Solution("Brute force: 2^100 is huge, I guess 4.", False, 300),
    Solution("modular arithmetic gives 1.", False, 50),
]


def pred(**kw) -> MetaPrediction:
    return MetaPrediction(found=True, **kw)


def test_the_worked_example():
    p = pred(notions=("modular arithmetic", "Fermat's little theorems", "remainders", "power cycles"),
             pass_rate=4, solution_length=120)
    # length: 100 < 120 < 150 -> 1. pass rate: true 2/4, predicted 4/8 -> 0.01**0 = 1.
    # notions: "remainder" is in the problem (dropped); "modular arithmetic" +1 +1 -1 = 1 > 0;
    # "Fermat's little theorem" +1; "power cycle" appears nowhere -> 2 of 3.
    r = meta_reward(p, PROBLEM, SOLUTIONS, k=8, base=0.01)
    assert (r.length, r.pass_rate) == (1.0, 1.0)
    assert r.notions == pytest.approx(2 / 3)
    assert r.reward == pytest.approx((1 + 1 + 2 / 3) / 3)


@pytest.mark.parametrize("predicted, expected", [(99, 0.0), (100, 0.0), (101, 1.0), (149, 1.0), (150, 0.0), (10**17, 0.0)])
def test_length_is_strictly_between_the_correct_lengths(predicted, expected):
    assert length_score(predicted, SOLUTIONS) == expected  # 300 and 50 are incorrect: they do not widen the range


def test_length_needs_two_distinct_correct_lengths():
    one = [Solution("a", True, 100), Solution("b", False, 10), Solution("c", False, 500)]
    assert length_score(100, one) == 0.0 and length_score(50, one) == 0.0
    same = [Solution("a", True, 100), Solution("b", True, 100)]
    assert length_score(100, same) == 0.0
    assert length_score(100, [Solution("a", False, 50), Solution("b", False, 150)]) == 0.0
    assert length_score(None, SOLUTIONS) == 0.0


@pytest.mark.parametrize("pass_rate, expected", [
    (4, 1.0),  # true 0.5, predicted 4/8
    (5, 0.01 ** 0.125),  # a miss by one count out of 8: 10**-0.25 = 0.562
    (0, 0.01 ** 0.5),
    (8, 0.01 ** 0.5),
    (None, 0.0),
])
def test_pass_rate_part(pass_rate, expected):
    assert pass_rate_score(pass_rate, SOLUTIONS, k=8, base=0.01) == pytest.approx(expected)


def test_pass_rate_base_and_k_and_no_solutions():
    assert pass_rate_score(2, SOLUTIONS, k=4, base=0.5) == 1.0  # 2/4 == 2/4
    assert pass_rate_score(4, SOLUTIONS, k=4, base=0.5) == pytest.approx(0.5 ** 0.5)
    assert pass_rate_score(0, [], k=8, base=0.01) == 0.0  # nothing to compare with


def test_no_correct_solution():
    failed = [Solution("modular arithmetic, wrong", False, 80), Solution("parity, wrong", False, 90)]
    r = meta_reward(pred(notions=("modular arithmetic", "parity"), pass_rate=0, solution_length=85),
                    PROBLEM, failed, k=8, base=0.01)
    assert (r.length, r.pass_rate, r.notions) == (0.0, 1.0, 0.0)
    assert r.reward == pytest.approx(1 / 3)
    assert meta_reward(pred(pass_rate=8), PROBLEM, failed, k=8, base=0.01).pass_rate == pytest.approx(0.01)


def test_a_single_correct_solution():
    sols = [Solution("parity argument", True, 120), Solution("nothing", False, 40)]
    r = meta_reward(pred(notions=("parity",), pass_rate=4, solution_length=120), PROBLEM, sols, k=8, base=0.01)
    assert (r.length, r.pass_rate, r.notions) == (0.0, 1.0, 1.0)  # one correct length: length scores 0


def test_missing_parts_score_zero():
    r = meta_reward(MetaPrediction(), PROBLEM, SOLUTIONS, k=8, base=0.01)
    assert (r.reward, r.length, r.pass_rate, r.notions) == (0.0, 0.0, 0.0, 0.0)
    only_rate = meta_reward(pred(pass_rate=4), PROBLEM, SOLUTIONS, k=8, base=0.01)
    assert only_rate.reward == pytest.approx(1 / 3)


@pytest.mark.parametrize("plural, singular", [
    ("identities", "identity"), ("Identities", "Identity"),  # ies -> y
    ("matches", "match"), ("dishes", "dish"), ("boxes", "box"), ("quizzes", "quizz"), ("heroes", "hero"),  # lose es
    ("medians", "median"), ("cosines", "cosine"), ("prime numbers", "prime number"),  # final s dropped
    ("class", "class"), ("Pythagoras's theorem", "Pythagoras's theorem"),  # ss; no final s
    ("series", "series"), ("Series", "Series"), ("arithmetic series", "arithmetic series"),  # series stays
    ("graph", "graph"), ("", ""),
])
def test_singularise_rules(plural, singular):
    assert singularise(plural) == singular


def test_notions_in_the_problem_are_dropped_after_singularising():
    problem = "Let n be a prime number. Show the series converges."
    assert scored_notions(["prime numbers", "series", "sieves", "sieve", "Prime number"], problem) == ["sieve", "Prime number"]
    assert notion_score(("prime numbers", "series"), problem, [Solution("prime number series", True, 1)]) == 0.0


def test_notion_matching_is_case_sensitive_substring_and_ties_do_not_count():
    sols = [Solution("we use Induction here", True, 10), Solution("induction fails", False, 10),
            Solution("by parity", True, 10), Solution("parity again", False, 10)]
    assert notion_score(("induction",), "", sols) == 0.0  # 0 correct (case differs) vs 1 incorrect
    assert notion_score(("Induction",), "", sols) == 1.0
    assert notion_score(("parity",), "", sols) == 0.0  # 1 vs 1 is not "more"
    assert notion_score(("parities", "parity", "Induction"), "", sols) == 0.5  # duplicates count once
    assert notion_score((), "", sols) == 0.0 and notion_score(None, "", sols) == 0.0


def test_score_response_through_the_parser():
    text = ('<meta>an example: {"notions": ["x"], "pass_rate": 8, "solution_length": 5}</meta>\n'
            '{"math_notion": ["modular arithmetic"], "pass_rate": 4, "solution_length": 120}')
    p, r = score_response(text, PROBLEM, SOLUTIONS, k=8, base=0.01)
    assert p.notions == ("modular arithmetic",) and (r.length, r.pass_rate, r.notions) == (1.0, 1.0, 1.0)
    # bool and float pass rates are the wrong type: that part scores 0, the others still count
    _, r = score_response('{"notions": ["modular arithmetic"], "pass_rate": true, "solution_length": 120}',
                          PROBLEM, SOLUTIONS, k=8, base=0.01)
    assert (r.length, r.pass_rate, r.notions) == (1.0, 0.0, 1.0)
    _, r = score_response('{"pass_rate": 4.0, "solution_length": 120.0}', PROBLEM, SOLUTIONS, k=8, base=0.01)
    assert r.reward == 0.0
    # a string of notions is not split on commas (the released code does): 0
    _, r = score_response('{"notions": "modular arithmetic, Fermat", "pass_rate": 4}', PROBLEM, SOLUTIONS, k=8, base=0.01)
    assert (r.notions, r.pass_rate) == (0.0, 1.0)
    # malformed JSON: nothing parsed, everything 0
    p, r = score_response('{"notions": ["modular arithmetic"], "pass_rate": 4,', PROBLEM, SOLUTIONS, k=8, base=0.01)
    assert not p.found and r.reward == 0.0


def test_every_part_is_within_0_and_1():
    for rate in range(0, 9):
        for length in (1, 99, 120, 10**17):
            r = meta_reward(pred(notions=("modular arithmetic",), pass_rate=rate, solution_length=length),
                            PROBLEM, SOLUTIONS, k=8, base=0.01)
            assert all(0.0 <= x <= 1.0 and math.isfinite(x) for x in (r.reward, r.length, r.pass_rate, r.notions))
