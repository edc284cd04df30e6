"""`peirce merge CONFIG.yaml [key=value ...] --out DIR`, in process."""

from __future__ import annotations

import torch
import yaml
from merge_helpers import SPECIALISTS, load_state

from peirce.cli.main import main


def _write(tmp_path, data: dict):
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_merge_cli_with_overrides(tmp_path, quartet, quartet_states, capsys):
    cfg = _write(tmp_path, {"models": {n: str(quartet[n]) for n in SPECIALISTS}, "dtype": "float32"})
    out = tmp_path / "merged"
    rc = main(["merge", str(cfg), "normalize=false", "weights.induction=0.5", "--out", str(out)])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out.resolve())
    merged = load_state(out)
    w = {"deduction": 1.0, "induction": 0.5, "abduction": 0.1}
    key = "model.layers.1.mlp.up_proj.weight"
    want = sum(w[n] * quartet_states[n][key].double() for n in SPECIALISTS)
    torch.testing.assert_close(merged[key].double(), want, rtol=1e-6, atol=1e-7)
    spec = yaml.safe_load((out / "merge.yaml").read_text())
    assert {m["model"]: m["parameters"]["weight"] for m in spec["models"]} == {str(quartet[n].resolve()): w[n] for n in SPECIALISTS}
    # a second run into the same folder needs --overwrite
    assert main(["merge", str(cfg), "--out", str(out)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main(["merge", str(cfg), "--out", str(out), "--overwrite"]) == 0


def test_merge_cli_errors_name_the_field(tmp_path, quartet, capsys):
    models = {n: str(quartet[n]) for n in SPECIALISTS}
    cfg = _write(tmp_path, {"models": models})
    assert main(["merge", str(cfg), "method=ties", "--out", str(tmp_path / "o")]) == 2
    assert "base_model is required for method=ties" in capsys.readouterr().err
    assert main(["merge", str(cfg), "method=dare", "--out", str(tmp_path / "o")]) == 2
    assert "method" in capsys.readouterr().err
    assert main(["merge", str(cfg), f"models.induction={tmp_path}/none", "--out", str(tmp_path / "o")]) == 2
    assert "models.induction" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "nofile.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
