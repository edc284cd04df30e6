"""Length cutoff of solution requests."""

import pytest

from peirce.masa.config import CutoffConfig
from peirce.masa.cutoff import solution_max_tokens

ON = CutoffConfig(enabled=True)


@pytest.mark.parametrize("lengths, expected", [
    ([100, 200, None], 300),  # 2 x mean(100, 200)
    ([10], 64),  # min clamp
    ([10**17], 1024),  # max clamp (default_max)
    ([10**400], 1024),  # an absurd integer neither overflows nor raises
    ([None, None], 1024),  # nothing valid: the max
    ([], 1024),
])
def test_clamped_factor_times_mean(lengths, expected):
    assert solution_max_tokens(lengths, ON, 1024) == expected


def test_rounding_is_half_up_and_factor_applies():
    assert solution_max_tokens([103], CutoffConfig(enabled=True, factor=1.5), 1024) == 155  # 154.5 (round() gives 154)
    assert solution_max_tokens([100, 101], CutoffConfig(enabled=True, factor=1.0), 1024) == 101  # 100.5


def test_bounds():
    assert solution_max_tokens([1000], CutoffConfig(enabled=True, max_tokens=512), 1024) == 512
    assert solution_max_tokens([None], CutoffConfig(enabled=True, max_tokens=512), 1024) == 512
    assert solution_max_tokens([1000], CutoffConfig(enabled=True, max_tokens=4096), 1024) == 1024  # never above the engine's
    assert solution_max_tokens([1], CutoffConfig(enabled=True, min_tokens=64), 32) == 32  # min never above the max
    assert solution_max_tokens([100], CutoffConfig(enabled=False, max_tokens=512), 1024) == 1024  # off
    with pytest.raises(ValueError, match="default_max"):
        solution_max_tokens([100], ON, 0)
