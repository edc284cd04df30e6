"""pass@k against brute-force enumeration of k-subsets, exact binomials, and its edge cases."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peirce.eval.passk import PassKError, avg_correct, mean_pass_at_k, pass_at_k, summarize


def brute_force(n: int, c: int, k: int) -> float:
    """Fraction of k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_matches_enumeration_of_all_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_stable_where_binomials_overflow_floats():
    n, c, k = 2000, 7, 300  # C(2000, 300) is far beyond float range
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


def test_edge_cases():
    assert pass_at_k(10, 0, 5) == 0.0  # c = 0
    assert pass_at_k(10, 6, 5) == 1.0  # n - c < k: every subset has a correct sample
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)  # pass@1 is the plain success rate


@pytest.mark.parametrize(("args", "field"), [
    ((0, 0, 1), "n=0"), ((4, 5, 1), "c=5"), ((4, -1, 1), "c=-1"), ((4, 2, 5), "k=5"), ((4, 2, 0), "k=0"),
    ((4.0, 2, 1), "n=4.0"), ((4, True, 1), "c=True"),
])
def test_bad_counts_name_the_field(args, field):
    with pytest.raises(PassKError, match=field):
        pass_at_k(*args)


def test_means_over_problems_and_avg():
    counts = [(4, 0), (4, 1), (4, 4)]
    assert mean_pass_at_k(counts, 2) == pytest.approx((0 + 0.5 + 1) / 3)
    assert avg_correct(counts) == pytest.approx((0 + 0.25 + 1) / 3)
    out = summarize(counts, [2, 1, 2])
    assert set(out) == {"pass@1", "pass@2", "avg@4"}
    assert out["avg@4"] == pytest.approx(out["pass@1"])  # avg@n is the unbiased pass@1
    assert "avg@mixed" in summarize([(2, 1), (4, 1)], [1])
    with pytest.raises(PassKError, match="at least one"):
        summarize([], [1])


@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_monotone_in_k_and_c(nc):
    n, c = nc
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))
    if c < n:
        assert all(pass_at_k(n, c, k) <= pass_at_k(n, c + 1, k) + 1e-12 for k in range(1, n + 1))
