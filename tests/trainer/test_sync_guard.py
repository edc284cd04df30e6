"""The weight-sync guard, fed the learner's train-step metrics as plain dicts.

`logprob_gap_mean` is the learner's key (mean |learner - engine| logprob over on-policy
tokens; absent or None when a batch has none), so these dicts are what a run's driver
receives from `LearnerActor.train`.
"""

from __future__ import annotations

import math

import pytest

from peirce.trainer.sync_guard import GAP_KEY, SyncGuard


def feed(guard: SyncGuard, gaps: list[float | None], start: int = 1):
    return [guard.observe(step, {"loss": 0.1} if gap is None else {"loss": 0.1, GAP_KEY: gap})
            for step, gap in enumerate(gaps, start=start)]


def test_healthy_gaps_are_recorded_without_warnings():
    g = SyncGuard()
    out = feed(g, [0.01, 0.03, 0.02, None])
    assert [v.record() for v in out] == [{GAP_KEY: 0.01}, {GAP_KEY: 0.03}, {GAP_KEY: 0.02}, {GAP_KEY: None}]
    assert not any(v.warning or v.stop for v in out)
    assert g.summary() == {"logprob_gap_last": 0.02, "logprob_gap_max": 0.03}


def test_warns_at_most_once_per_warn_every_steps():
    g = SyncGuard(warn=0.1, stop=None, warn_every=5)
    out = feed(g, [0.3] * 12)
    assert [v.step for v in out if v.warning] == [1, 6, 11]
    assert "0.3 nats at step 1" in out[0].warning and "trainer.logprob_gap_warn=0.1" in out[0].warning
    assert "not be reaching the engines" in out[0].warning
    assert not any(v.stop for v in out)  # stop=None never stops


def test_stops_after_two_consecutive_steps_past_stop():
    g = SyncGuard(warn=0.1, stop=1.0)
    out = feed(g, [1.5, 0.05, 1.4, 2.0])
    assert [bool(v.stop) for v in out] == [False, False, False, True]  # 1.5 then healthy resets the count
    assert out[0].warning and out[0].step == 1
    msg = out[3].stop
    assert "trainer.logprob_gap_stop=1.0 for 2 consecutive steps" in msg and "up to step 4" in msg
    assert "weight updates are not reaching the rollout engines" in msg


def test_steps_without_on_policy_rows_neither_confirm_nor_clear():
    g = SyncGuard(stop=1.0)
    out = feed(g, [1.2, None, None, 1.3])
    assert out[3].stop and not any(v.stop for v in out[:3])
    assert g.gap_last == 1.3 and g.gap_max == 1.3


def test_at_the_threshold_is_not_past_it():
    g = SyncGuard(warn=0.1, stop=1.0)
    out = feed(g, [0.1, 1.0, 1.0, 1.0])
    assert [v.step for v in out if v.warning] == [2]  # 0.1 is not past warn=0.1; 1.0 is
    assert not any(v.stop for v in out)  # 1.0 is not past stop=1.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "nan", 1e308 * 10])
def test_non_finite_gaps_count_as_past_every_threshold(bad):
    g = SyncGuard(warn=0.1, stop=1.0)
    out = feed(g, [bad, bad])
    assert out[0].warning and "inf nats" in out[0].warning
    assert out[1].stop and math.isinf(out[1].gap)


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="trainer.logprob_gap_warn: must be > 0, got 0"):
        SyncGuard(warn=0)
    with pytest.raises(ValueError, match="trainer.logprob_gap_stop: must be > 0 or null, got -1"):
        SyncGuard(stop=-1)
