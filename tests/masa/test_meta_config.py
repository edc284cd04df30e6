"""MetaConfig: off by default, every rule names the field, the rule and the value."""

import pytest

from peirce.config import ConfigError
from peirce.config.loader import load_config
from peirce.masa.config import DEFAULT_HINT_TEMPLATE, MetaConfig


def _error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(MetaConfig, None, list(overrides))
    return str(info.value)


def test_defaults_are_off_and_match_the_papers():
    cfg = MetaConfig()
    assert not cfg.enabled and not cfg.gating.enabled and not cfg.cutoff.enabled and not cfg.hint.enabled
    assert not cfg.expert.enabled
    assert (cfg.k, cfg.base, cfg.cutoff.factor, cfg.mode) == (8, 0.01, 2.0, "parallel")
    assert (cfg.meta_rollouts, cfg.solution_rollouts, cfg.gating.sigma) == (8, 16, 0.1)
    assert DEFAULT_HINT_TEMPLATE.startswith("The problem could be solved using the following notions:")
    assert all(f.description for f in MetaConfig.model_fields.values())


@pytest.mark.parametrize("override, expected", [
    ("gating.enabled=true", "mode: gating.enabled needs mode=sequential"),
    ("hint.enabled=true", "mode: hint.enabled needs mode=sequential"),
    ("k=0", "k: Input should be greater than or equal to 1 (got 0)"),
    ("k=true", "k: Input should be a valid integer (got True)"),
    ("k=2.0", "k: Input should be a valid integer (got 2.0)"),
    ("base=1", "base: Input should be less than 1 (got 1)"),
    ("base=.nan", "base: Input should be a finite number"),
    ("gating.sigma=1.5", "gating.sigma: Input should be less than or equal to 1 (got 1.5)"),
    ("gating.zero_tolerance=0.5", "gating.zero_tolerance: Input should be less than 0.5 (got 0.5)"),
    ("gating.audit_share=-0.1", "gating.audit_share: Input should be greater than or equal to 0"),
    ("cutoff.factor=0", "cutoff.factor: Input should be greater than 0 (got 0)"),
    ("expert.every=0", "expert.every: Input should be greater than or equal to 1 (got 0)"),
    ("expert.min_score=2", "expert.min_score: Input should be less than or equal to 1 (got 2)"),
    ("prompt_template='Solve {problem}'", "prompt_template: must contain the placeholder(s) {k} (got 'Solve {problem}')"),
    ("hint.template='no placeholder'", "hint.template: must contain the placeholder(s) {notions}"),
    ("mode=serial", "mode: Input should be 'parallel' or 'sequential' (got 'serial')"),
    ("gating.bogus=1", "gating.bogus: Extra inputs are not permitted (got 1)"),
])
def test_errors_name_the_field_rule_and_value(override, expected):
    assert expected in _error(override)


def test_cutoff_bounds_must_be_ordered():
    msg = _error("mode=sequential", "cutoff.enabled=true", "cutoff.min_tokens=100", "cutoff.max_tokens=50")
    assert "cutoff.min_tokens: must be <= cutoff.max_tokens (50) (got 100)" in msg


def test_sequential_features_and_mode_at():
    cfg = load_config(MetaConfig, None, ["enabled=true", "mode=sequential", "switch_step=80", "gating.enabled=true",
                                         "cutoff.enabled=true", "hint.enabled=true"])
    assert [cfg.mode_at(s) for s in (0, 79, 80, 500)] == ["parallel", "parallel", "sequential", "sequential"]
    assert MetaConfig().mode_at(10**6) == "parallel"


def test_importing_the_config_first_has_no_cycle():
    # peirce.config.schema may import peirce.masa.config; the reverse import must stay lazy.
    import subprocess
    import sys

    code = "import peirce.masa.config as m; import peirce.config; print(m.MetaConfig().k)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "8", out.stderr
