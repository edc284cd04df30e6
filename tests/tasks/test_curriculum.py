"""Curriculum: level sequence per config, threshold advancing, deterministic shuffles, resume."""

from __future__ import annotations

import json
import random

import pytest

from peirce.tasks.curriculum import Curriculum, CurriculumConfig, CurriculumDone


def _drain(cur: Curriculum) -> list[tuple[int, int, tuple[int, ...]]]:
    out = []
    while not cur.done:
        b = cur.next_batch()
        out.append((b.level, b.epoch, b.indices))
    return out


def test_epochs_mode_level_sequence_drop_last():
    cfg = CurriculumConfig(levels=(1, 2), level_sizes={1: 5, 2: 3}, batch_size=2, epochs_per_level=2)
    stream = _drain(Curriculum(cfg))
    assert [(lvl, ep) for lvl, ep, _ in stream] == [(1, 0), (1, 0), (1, 1), (1, 1), (2, 0), (2, 1)]
    assert all(len(ix) == 2 for _, _, ix in stream)
    for lvl, ep in {(1, 0), (1, 1), (2, 0), (2, 1)}:
        ix = [i for l_, e, b in stream if (l_, e) == (lvl, ep) for i in b]
        assert len(set(ix)) == len(ix) and set(ix) <= set(range(cfg.level_sizes[lvl]))


def test_epochs_mode_keep_last_covers_every_item():
    cfg = CurriculumConfig(levels=(3, 1), level_sizes={1: 4, 3: 5}, batch_size=2, epochs_per_level=1, drop_last=False)
    stream = _drain(Curriculum(cfg))
    assert [(lvl, len(ix)) for lvl, _, ix in stream] == [(3, 2), (3, 2), (3, 1), (1, 2), (1, 2)]
    assert sorted(i for lvl, _, ix in stream if lvl == 3 for i in ix) == list(range(5))


def test_done_and_next_batch_level():
    cur = Curriculum(CurriculumConfig(levels=(1,), level_sizes={1: 2}, batch_size=2))
    assert cur.next_batch_level() == 1 and not cur.done
    cur.next_batch()
    assert cur.done and cur.next_batch_level() is None
    with pytest.raises(CurriculumDone):
        cur.next_batch()
    assert cur.history == [{"level": 1, "reason": "epochs", "steps": 1, "epochs": 1, "moving_average": None}]


def test_shuffle_is_deterministic_per_seed_and_differs_per_epoch():
    cfg = CurriculumConfig(levels=(1,), level_sizes={1: 50}, batch_size=50, epochs_per_level=3, seed=5)
    a, b = _drain(Curriculum(cfg)), _drain(Curriculum(cfg))
    assert a == b
    assert a[0][2] != a[1][2] and sorted(a[0][2]) == sorted(a[1][2]) == list(range(50))
    other = _drain(Curriculum(CurriculumConfig(levels=(1,), level_sizes={1: 50}, batch_size=50, epochs_per_level=3, seed=6)))
    assert other != a


def test_reward_threshold_needs_min_steps_full_window_and_average():
    cfg = CurriculumConfig(
        levels=(1, 2), level_sizes={1: 100, 2: 100}, batch_size=2, mode="reward_threshold",
        epochs_per_level=None, reward_threshold=0.75, window=4, min_steps=3,
    )
    cur = Curriculum(cfg)
    steps = [
        ([0.0], False),  # window not full yet (1 of 4)
        ([1.0, 1.0, 1.0], False),  # window full, average 0.75, but only 2 of min_steps=3 batches
        ([0.0, 0.0], False),  # 3 steps; last four [1, 1, 0, 0]: average 0.5 < 0.75
        ([1.0, 1.0, 1.0], True),  # last four [0, 1, 1, 1]: 0.75 >= 0.75 -> advance
    ]
    for rewards, advances in steps:
        b = cur.next_batch()
        assert b.level == 1
        assert cur.report(b.level, rewards) is advances
    assert cur.level == 2 and cur.moving_average() is None  # window restarts at the new level
    assert cur.history[-1]["reason"] == "reward_threshold" and cur.history[-1]["steps"] == 4
    # a late report from level 1 (async) is ignored and does not leak into level 2
    assert not cur.report(1, [1.0] * 10)
    assert cur.moving_average() is None and cur.state_dict()["ignored_reports"] == 1
    b = cur.next_batch()
    assert b.level == 2 and b.epoch == 0


def test_reward_threshold_with_epoch_cap_moves_on():
    cfg = CurriculumConfig(
        levels=(1, 2), level_sizes={1: 4, 2: 4}, batch_size=2, mode="reward_threshold",
        epochs_per_level=2, reward_threshold=0.9, window=2, min_steps=1,
    )
    cur = Curriculum(cfg)
    levels = []
    while not cur.done:
        b = cur.next_batch()
        levels.append(b.level)
        cur.report(b.level, [0.0, 0.0])  # never good enough
    assert levels == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [h["reason"] for h in cur.history] == ["epochs", "epochs"]


@pytest.mark.parametrize("mode", ["epochs", "reward_threshold"])
@pytest.mark.parametrize("cut", [1, 4, 7, 11])
def test_resume_mid_epoch_gives_identical_remaining_stream(mode, cut):
    kwargs = dict(levels=(1, 2), level_sizes={1: 7, 2: 5}, batch_size=2, seed=11, mode=mode)
    if mode == "epochs":
        cfg = CurriculumConfig(**kwargs, epochs_per_level=3)
    else:
        cfg = CurriculumConfig(**kwargs, epochs_per_level=4, reward_threshold=0.6, window=6, min_steps=2)

    def step(cur: Curriculum, rng: random.Random, log: list) -> None:
        b = cur.next_batch()
        rewards = [rng.random() for _ in range(2)]
        log.append((b, cur.report(b.level, rewards)))

    ref, rng = Curriculum(cfg), random.Random(3)
    ref_log: list = []
    while not ref.done:
        step(ref, rng, ref_log)

    first, rng = Curriculum(cfg), random.Random(3)
    log: list = []
    for _ in range(cut):
        step(first, rng, log)
    state = json.loads(json.dumps(first.state_dict()))
    second = Curriculum(cfg)
    second.load_state_dict(state)
    while not second.done:
        step(second, rng, log)
    assert log == ref_log
    assert second.history == ref.history


def test_resume_refuses_a_different_stream():
    cfg = CurriculumConfig(levels=(1,), level_sizes={1: 6}, batch_size=2, seed=1)
    state = Curriculum(cfg).state_dict()
    with pytest.raises(ValueError, match="seed=1 but the config has 2"):
        Curriculum(CurriculumConfig(levels=(1,), level_sizes={1: 6}, batch_size=2, seed=2)).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"levels": ()}, "CurriculumConfig.levels"),
        ({"levels": (1, 1)}, r"CurriculumConfig.levels must not repeat a level, got \(1, 1\)"),
        ({"mode": "linear"}, "CurriculumConfig.mode .* got 'linear'"),
        ({"batch_size": 0}, "CurriculumConfig.batch_size must be an integer >= 1, got 0"),
        ({"level_sizes": {}}, "level_sizes has no entry for level 1"),
        ({"level_sizes": {1: 1}}, r"level_sizes\[1\]=1 is smaller than batch_size=2"),
        ({"epochs_per_level": 0}, "epochs_per_level must be an integer >= 1, got 0"),
        ({"epochs_per_level": None}, "epochs_per_level=None needs mode='reward_threshold'"),
        ({"window": 0}, "window must be an integer >= 1, got 0"),
    ],
)
def test_config_errors_name_field_and_value(kwargs, message):
    base = dict(levels=(1,), level_sizes={1: 4}, batch_size=2)
    with pytest.raises(ValueError, match=message):
        CurriculumConfig(**{**base, **kwargs})
