"""The idle clock: shares of wall time each role spent without work."""

from __future__ import annotations

import pytest

from peirce.trainer.idle import IdleClock


def test_idle_share_per_role_since_the_last_take():
    clock = IdleClock(now=0.0)
    clock.tick(1.0, learner=[True], rollout=[False, False])  # 1 s: learner busy, both engines idle
    clock.tick(4.0, learner=[False], rollout=[True, False])  # 3 s: learner idle, one engine of two busy
    got = clock.take()
    assert got["learner"] == pytest.approx(0.75) and got["rollout"] == pytest.approx(1 - 3 / 8)
    clock.tick(5.0, learner=[True], rollout=[])  # no registered engine: nothing to say about them
    assert clock.take() == {"learner": 0.0, "rollout": None}
    assert clock.take() == {}


def test_time_going_backwards_counts_nothing():
    clock = IdleClock(now=10.0)
    clock.tick(9.0, learner=[True])
    assert clock.take() == {"learner": None}
