"""Every YAML shipped in configs/ and deploy/ parses (within the loader's bounds) and every
peirce config it names validates, each stage's resolved run included."""

import shlex
from pathlib import Path

import pytest

from peirce.cli.main import main
from peirce.config import TrainConfig, load_config
from peirce.config.safe_yaml import load_yaml_documents
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.resolve import resolve_all

REPO = Path(__file__).resolve().parents[2]
YAMLS = sorted(p for d in ("configs", "deploy") for p in (REPO / d).rglob("*") if p.suffix in (".yaml", ".yml"))
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
PIPELINE_KEYS = {"stage_a", "stage_b", "stage_c", "profile", "eval", "base_model"}


def test_the_glob_found_the_shipped_files():
    names = {p.name for p in YAMLS}
    assert {"default.yaml", "smoke.yaml", "train-deduction.yaml", "job.yaml", "rayjob.yaml", "prometheus.yml"} <= names


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_yaml_parses_within_bounds(path):
    docs = load_yaml_documents(path.read_bytes(), str(path))
    assert docs and all(d is not None for d in docs)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_validates(path):
    [data] = load_yaml_documents(path.read_bytes(), str(path))
    if path.name.startswith("sft"):  # `peirce sft` configs (peirce.sft.config)
        from peirce.sft.config import SFTConfig

        assert load_config(SFTConfig, path).name == data["name"]
    elif PIPELINE_KEYS & set(data):
        pc = load_config(PipelineConfig, path)
        runs = resolve_all(pc)
        assert set(pc.stage_a.specialists) <= set(runs)
        assert all(isinstance(c, TrainConfig) for c in runs.values())
    else:
        assert load_config(TrainConfig, path).name == data["name"]


def _peirce_entrypoints() -> list[tuple[str, list[str]]]:
    """argv after `peirce.cli.main` in every deploy manifest (Ray job spec, KubeRay RayJob)."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, where)
        elif isinstance(node, list) and "peirce.cli.main" in node:
            found.append((where, [str(a) for a in node[node.index("peirce.cli.main") + 1:]]))
        elif isinstance(node, list):
            for v in node:
                walk(v, where)
        elif isinstance(node, str) and "peirce.cli.main" in node:
            argv = shlex.split(node)
            found.append((where, argv[argv.index("peirce.cli.main") + 1:]))

    for path in YAMLS:
        if "deploy" in path.parts:
            for doc in load_yaml_documents(path.read_bytes(), str(path)):
                walk(doc, path.name)
    return found


ENTRYPOINTS = _peirce_entrypoints()


def test_deploy_manifests_have_entrypoints():
    assert {where for where, _ in ENTRYPOINTS} >= {"job.yaml", "rayjob.yaml"}


@pytest.mark.parametrize("where, argv", ENTRYPOINTS, ids=[w for w, _ in ENTRYPOINTS])
def test_deploy_entrypoints_pass_check(where, argv, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the job's working_dir is the repository root
    assert main([*argv, "--check"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("config OK: ")
