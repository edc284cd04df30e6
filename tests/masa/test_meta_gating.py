"""Gating decision, audit draw and the precision/recall accumulator."""

import msgspec
import pytest

from peirce.masa.config import GatingConfig
from peirce.masa.gating import GatingStats, audit_draw, audited, decide, zero_variance

ON = GatingConfig(enabled=True)


@pytest.mark.parametrize("rates, gated, predicted", [
    ([0] * 8, True, "all_fail"),
    ([8] * 8, True, "all_pass"),
    ([0] * 7 + [1], False, None),  # std 0.041 < 0.1 but the mean 1/64 is not at 0
    ([4] * 8, False, None),  # agree, but on a mixed group
    ([0, 0, 0, 0, 8, 8, 8, 8], False, None),
    ([0] * 7 + [None], False, "all_fail"),  # one invalid prediction: min_valid_share 1 needs all
])
def test_decide(rates, gated, predicted):
    d = decide(rates, 8, ON)
    assert (d.gated, d.predicted) == (gated, predicted)


def test_decide_statistics_and_thresholds():
    d = decide([0] * 7 + [1], 8, ON)
    assert d.mean == pytest.approx(1 / 64) and d.valid == 8
    fractions = [0] * 7 + [1 / 8]
    mean = sum(fractions) / 8
    assert d.std == pytest.approx((sum((f - mean) ** 2 for f in fractions) / 8) ** 0.5)  # population std
    assert decide([0] * 7 + [1], 8, GatingConfig(zero_tolerance=0.02)).gated  # "near 0" with a tolerance
    assert not decide([0] * 7 + [1], 8, GatingConfig(zero_tolerance=0.02, sigma=0.04)).gated  # std 0.041 >= 0.04
    assert decide([8] * 7 + [7], 8, GatingConfig(full_tolerance=0.02)).predicted == "all_pass"
    assert decide([0] * 7 + [None], 8, GatingConfig(min_valid_share=0.8)).gated  # 7 valid >= 0.8 x 8
    assert not decide([0] * 6 + [None, None], 8, GatingConfig(min_valid_share=0.8)).gated  # 6 < 6.4
    assert not decide([0] * 8, 8, GatingConfig(sigma=0.0)).gated  # sigma 0 never gates
    none = decide([None] * 4, 8, ON)
    assert (none.gated, none.mean, none.std, none.valid) == (False, None, None, 0)
    assert decide([0], 8, ON).gated  # M = 1: one prediction agrees with itself


def test_audit_is_deterministic_and_has_the_configured_share():
    assert audit_draw("p1", 0) == audit_draw("p1", 0) and audit_draw("p1", 0) != audit_draw("p1", 1)
    ids = [f"math-train-{i:05d}" for i in range(20_000)]
    share = sum(audited(i, 7, 0.3) for i in ids) / len(ids)
    assert 0.28 < share < 0.32
    assert not any(audited(i, 7, 0.0) for i in ids[:500]) and all(audited(i, 7, 1.0) for i in ids[:500])
    assert {i for i in ids if audited(i, 1, 0.3)} != {i for i in ids if audited(i, 2, 0.3)}
    assert 0 <= audit_draw("\ud800 lone surrogate", 3) < 1  # any str id hashes


def test_zero_variance():
    assert zero_variance([True] * 4) and zero_variance([False] * 4) and zero_variance([True])
    assert not zero_variance([True, False, False])


def test_precision_and_recall_by_hand():
    stats = GatingStats()
    assert (stats.precision, stats.recall, stats.gated_share) == (None, None, None)
    for _ in range(8):
        stats = stats.record(True, None)  # gated, not audited
    stats = stats.record(True, True).record(True, False)  # 2 audited: 1 really zero-variance
    for i in range(20):
        stats = stats.record(False, i < 5)  # 20 solved, 5 of them zero-variance (missed by the gate)
    assert (stats.gated, stats.audited, stats.audited_zero_var, stats.open, stats.open_zero_var) == (10, 2, 1, 20, 5)
    assert stats.precision == 0.5
    assert stats.recall == pytest.approx(5 / (5 + 5))  # TP estimated as 10 gated x precision 0.5
    assert stats.gated_share == pytest.approx(10 / 30)
    assert msgspec.json.decode(msgspec.json.encode(stats), type=GatingStats) == stats


def test_recall_edges():
    assert GatingStats().record(True, None).recall is None  # gated but never audited: unknown
    assert GatingStats().record(False, True).recall == 0.0  # a zero-variance group the gate missed
    assert GatingStats().record(False, False).recall is None  # no positive at all
    assert GatingStats().record(True, True).recall == 1.0
    with pytest.raises(ValueError, match="not gated was solved"):
        GatingStats().record(False, None)
