"""95% intervals against published values, the bootstrap's determinism and coverage, verdicts."""

from __future__ import annotations

import random

import pytest

from peirce.eval.intervals import (Interval, IntervalError, bootstrap_mean, metric_intervals, verdict, wilson)


@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score, no correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
    # and the textbook 5 of 10
    (5, 10, 0.2366, 0.7634),
])
def test_wilson_matches_published_values(k, n, low, high):
    ci = wilson(k, n)
    assert ci.method == "wilson"
    assert ci.low == pytest.approx(low, abs=5e-5) and ci.high == pytest.approx(high, abs=5e-5)


def test_wilson_edges_are_exact_and_never_degenerate():
    none, every = wilson(0, 100), wilson(100, 100)
    assert none.low == 0.0 and none.high == pytest.approx(0.0370, abs=5e-5)  # not [0, 0] as a normal interval
    assert every.high == 1.0 and every.low == pytest.approx(0.9630, abs=5e-5)
    assert wilson(3, 10, confidence=0.99).low < wilson(3, 10).low  # wider at higher confidence


@pytest.mark.parametrize("args", [(-1, 10), (11, 10), (0, 0), (1.0, 10), (True, 10)])
def test_wilson_rejects_bad_counts(args):
    with pytest.raises(IntervalError, match="successes"):
        wilson(*args)


def test_bootstrap_is_deterministic_and_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 70 + [0.5] * 20
    a, b = bootstrap_mean(values), bootstrap_mean(values)
    assert a == b and a.method == "bootstrap"
    mean = sum(values) / len(values)
    assert a.low < mean < a.high
    assert bootstrap_mean([0.0] * 50) == Interval(0.0, 0.0, "bootstrap")  # no spread, no interval width


def test_bootstrap_covers_the_true_mean_about_95_percent_of_the_time():
    """Coverage over 200 simulated benchmarks of 100 problems whose per-problem score is the
    fraction correct of 4 samples with p = 0.3: the nominal 95% should land within 89-99%."""
    rng = random.Random(7)
    hits = 0
    for trial in range(200):
        values = [sum(rng.random() < 0.3 for _ in range(4)) / 4 for _ in range(100)]
        ci = bootstrap_mean(values, resamples=400, seed=trial)
        hits += ci.low <= 0.3 <= ci.high
    assert 178 <= hits <= 198


def test_bootstrap_rejects_bad_input():
    with pytest.raises(IntervalError):
        bootstrap_mean([])
    with pytest.raises(IntervalError):
        bootstrap_mean([0.5, 1.5])
    with pytest.raises(IntervalError):
        bootstrap_mean([0.5], resamples=10)


def test_metric_intervals_greedy_uses_wilson_over_problems():
    got = metric_intervals([1, 0, 0, 1, 0, 0, 0, 0, 0, 0], n=1, k_values=[1])
    assert set(got) == {"pass@1", "avg@1"}
    assert got["pass@1"] == wilson(2, 10) == got["avg@1"]


def test_metric_intervals_sampled_uses_bootstrap_of_per_problem_scores():
    counts = [0, 1, 2, 4, 4, 0, 3, 1] * 5
    got = metric_intervals(counts, n=4, k_values=[1, 2])
    assert set(got) == {"pass@1", "pass@2", "avg@4"}
    assert all(ci.method == "bootstrap" for ci in got.values())
    assert got["pass@2"].low >= got["pass@1"].low  # pass@2 >= pass@1 problem by problem
    assert got["avg@4"] == got["pass@1"]  # avg@n equals the unbiased pass@1
    with pytest.raises(IntervalError):
        metric_intervals([], n=1, k_values=[1])


@pytest.mark.parametrize("cand, ref, said", [
    ((0.40, 0.60), (0.00, 0.04), "beats"),
    ((0.00, 0.04), (0.40, 0.60), "worse"),
    ((0.30, 0.50), (0.45, 0.65), "not distinguishable"),  # overlap
    ((0.30, 0.50), (0.50, 0.70), "not distinguishable"),  # touching is overlapping
    ((0.00, 0.04), (0.00, 0.04), "not distinguishable"),  # 0 of 100 vs 0 of 100
])
def test_verdict_needs_disjoint_intervals(cand, ref, said):
    assert verdict(Interval(*cand, "wilson"), Interval(*ref, "wilson")) == said


def test_interval_bounds_checked():
    with pytest.raises(IntervalError):
        Interval(0.6, 0.4, "wilson")
    with pytest.raises(IntervalError):
        Interval(-0.1, 0.4, "wilson")
