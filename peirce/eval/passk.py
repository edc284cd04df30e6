"""Unbiased pass@k and avg@k over problems with n samples each.

pass@k of one problem with n samples of which c are correct is the probability that a
random k-subset of the n samples holds at least one correct one:
1 - C(n-c, k) / C(n, k) (Chen et al. 2021, "Evaluating Large Language Models Trained on
Code"). The binomials overflow floats for n in the hundreds, so the ratio is computed
as the product prod_{i=n-c+1..n} (1 - k/i), as in that paper's reference code. A
benchmark's pass@k is the mean over its problems. avg@n is the mean correctness over
all samples (per problem c/n, averaged); it equals the unbiased pass@1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class PassKError(ValueError):
    """Counts or k break a rule; the message names the field and value."""


def _check_counts(n: int, c: int, k: int | None = None) -> None:
    if type(n) is not int or n < 1:
        raise PassKError(f"n={n!r}: must be an int >= 1 (samples per problem)")
    if type(c) is not int or not 0 <= c <= n:
        raise PassKError(f"c={c!r}: must be an int in [0, n={n}] (correct samples)")
    if k is not None and (type(k) is not int or not 1 <= k <= n):
        raise PassKError(f"k={k!r}: must be an int in [1, n={n}]; draw at least k samples per problem")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem: 1 - C(n-c, k)/C(n, k), in product form."""
    _check_counts(n, c, k)
    if c == 0:
        return 0.0
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """pass@k averaged over problems; `counts` holds (n, c) per problem."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    if not values:
        raise PassKError("counts=[]: need at least one problem")
    return sum(values) / len(values)


def avg_correct(counts: Iterable[tuple[int, int]]) -> float:
    """avg@n: per-problem fraction of correct samples, averaged over problems."""
    values = []
    for n, c in counts:
        _check_counts(n, c)
        values.append(c / n)
    if not values:
        raise PassKError("counts=[]: need at least one problem")
    return sum(values) / len(values)


def summarize(counts: Sequence[tuple[int, int]], k_values: Sequence[int]) -> dict[str, float]:
    """{"pass@k": ...} for each k and {"avg@n": ...}, where n is the samples per problem
    (problems with unequal n are reported as "avg@mixed")."""
    if not counts:
        raise PassKError("counts=[]: need at least one problem")
    ns = {n for n, _ in counts}
    out = {f"pass@{k}": mean_pass_at_k(counts, k) for k in sorted(set(k_values))}
    out[f"avg@{ns.pop()}" if len(ns) == 1 else "avg@mixed"] = avg_correct(counts)
    return out
