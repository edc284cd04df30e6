"""benchmarks/gpu_check.sh on a machine without CUDA: it must stop at once, say why, and fail.

CUDA_VISIBLE_DEVICES="" hides any GPU, so this runs (and means the same) on GPU machines too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_refuses_clearly_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path / "out")}
    r = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "gpu_check: no CUDA device: torch.cuda.is_available() is False" in r.stderr
    assert "CUDA vllm wheel" in r.stderr
    assert not (tmp_path / "out").exists()  # nothing was started
