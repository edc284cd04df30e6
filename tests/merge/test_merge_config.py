"""MergeConfig validation and the mergekit YAML it produces (no merge runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peirce.config import ConfigError
from peirce.merge import MergeConfig, build_mergekit_config, parse_merge_config
from peirce.merge.config import REFERENCE_WEIGHTS

MODELS = {"deduction": "/m/ded", "induction": "/m/ind", "abduction": "/m/abd"}


def _err(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_merge_config(data)
    return str(info.value)


def test_defaults_are_the_reference_linear_merge():
    cfg = parse_merge_config({"models": MODELS})
    assert cfg.method == "linear" and cfg.dtype == "bfloat16" and cfg.effective_normalize
    assert cfg.weights == REFERENCE_WEIGHTS == {"deduction": 1.0, "induction": 0.2, "abduction": 0.1}
    eff = cfg.effective_weights()
    assert eff["deduction"] == pytest.approx(1 / 1.3) and round(eff["deduction"], 3) == 0.769
    assert round(eff["induction"], 3) == 0.154 and round(eff["abduction"], 3) == 0.077
    assert sum(eff.values()) == pytest.approx(1.0)


def test_normalize_default_follows_mergekit_per_method():
    base = {"models": MODELS, "base_model": "/m/base"}
    assert not parse_merge_config({**base, "method": "task_arithmetic"}).effective_normalize
    assert parse_merge_config({**base, "method": "ties"}).effective_normalize
    cfg = parse_merge_config({"models": MODELS, "normalize": False})
    assert not cfg.effective_normalize and cfg.effective_weights() == REFERENCE_WEIGHTS


def test_description_documents_effective_weights():
    text = MergeConfig.model_fields["normalize"].description + MergeConfig.model_fields["weights"].description
    assert "0.769/0.154/0.077" in text


def test_unknown_method_names_field_and_value():
    msg = _err({"method": "slerp", "models": MODELS})
    assert "method" in msg and "'slerp'" in msg and "ties" in msg


@pytest.mark.parametrize("method", ["ties", "task_arithmetic"])
def test_base_model_required(method):
    msg = _err({"method": method, "models": MODELS})
    assert "base_model is required" in msg and method in msg


def test_base_model_rejected_for_linear():
    assert "not used by method=linear" in _err({"models": MODELS, "base_model": "/m/base"})


def test_weights_keys_must_match_models():
    msg = _err({"models": {"deduction": "/a", "algebra": "/b"}, "weights": {"deduction": 1.0, "induction": 0.5}})
    assert "missing weights for ['algebra']" in msg and "weights for unknown models ['induction']" in msg
    # default weights name the three specialists, so other names need explicit weights
    assert "missing weights for ['x']" in _err({"models": {"x": "/a"}})


def test_other_bad_values_name_their_field():
    assert "density applies only to method=ties" in _err({"models": MODELS, "density": 0.5})
    assert "density" in _err({"method": "ties", "models": MODELS, "base_model": "/b", "density": 1.5})
    assert "extra_key" in _err({"models": MODELS, "extra_key": 1})
    assert "dtype" in _err({"models": MODELS, "dtype": "int8"})
    assert "weights.induction" in _err({"models": MODELS, "weights": {**REFERENCE_WEIGHTS, "induction": float("nan")}})
    assert "models.induction: path is empty" in _err({"models": {**MODELS, "induction": " "}})
    zero = {"deduction": 1.0, "induction": -0.5, "abduction": -0.5}
    assert "sum of weights" in _err({"models": MODELS, "weights": zero})
    assert parse_merge_config({"models": MODELS, "weights": zero, "normalize": False}).weights == zero
    assert "models" in _err({})
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_merge_config(["models"])  # type: ignore[arg-type]


def test_mergekit_dict_states_every_parameter():
    from mergekit.config import MergeConfiguration

    cfg = parse_merge_config({"method": "ties", "models": MODELS, "base_model": "/m/base", "density": 0.4})
    folders = {k: Path(v) for k, v in MODELS.items()}
    d = build_mergekit_config(cfg, folders, Path("/m/base"))
    assert d["merge_method"] == "ties" and d["base_model"] == "/m/base" and d["dtype"] == "bfloat16"
    assert d["parameters"] == {"normalize": True}
    assert [m["model"] for m in d["models"]] == ["/m/ded", "/m/ind", "/m/abd"]
    assert [m["parameters"] for m in d["models"]] == [
        {"weight": 1.0, "density": 0.4},
        {"weight": 0.2, "density": 0.4},
        {"weight": 0.1, "density": 0.4},
    ]
    MergeConfiguration.model_validate(d)  # mergekit's own schema accepts it
    lin = build_mergekit_config(parse_merge_config({"models": MODELS, "normalize": False}), folders, None)
    assert "base_model" not in lin and lin["parameters"] == {"normalize": False}
    assert all("density" not in m["parameters"] for m in lin["models"])
