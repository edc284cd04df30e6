"""`peirce run` argument handling (the pipeline itself runs in tests/pipeline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peirce.cli.main import build_parser
from peirce.cli.run import pipeline_overrides
from peirce.config import ConfigError, load_config
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.resolve import domain_configs

DEFAULT = str(Path(__file__).resolve().parents[2] / "configs" / "default.yaml")


def _config(*argv: str) -> PipelineConfig:
    args = build_parser().parse_args(["run", DEFAULT, *argv])
    return load_config(PipelineConfig, args.config, pipeline_overrides(args))


@pytest.mark.parametrize(("flag", "runs"), [
    ([], {"domain-from-merged", "domain-from-base"}),
    (["--from", "base"], {"domain-from-base"}),
    (["--from", "merged"], {"domain-from-merged"}),
    (["--from", "both"], {"domain-from-merged", "domain-from-base"}),
])
def test_from_selects_where_domain_rl_starts(flag, runs):
    assert set(domain_configs(_config(*flag), "/x/merged")) == runs


def test_from_rejects_other_values(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", DEFAULT, "--from", "scratch"])
    assert "invalid choice: 'scratch'" in capsys.readouterr().err


def test_bad_override_names_the_field():
    with pytest.raises(ConfigError, match="stage_c.starts"):
        _config("stage_c.starts=[nowhere]")
