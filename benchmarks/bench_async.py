"""Asynchrony: end-to-end trained samples/s at max_staleness 2 vs 0 (synchronous), one run each,
same model, task and budgets (tiny random Llama on the toy task; every part real).

Throughput is taken between the first and the last learner step, so engine start-up is
excluded; ratio = async / sync."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, parse_args  # noqa: E402


def _throughput(staleness: int, steps: int, root: Path) -> float:
    from peirce.config import TrainConfig, load_config
    from peirce.config.profiles import SMOKE_TRAIN, as_overrides
    from peirce.trainer.orchestrator import Orchestrator
    from peirce.trainer.run_dir import RunDir

    values = {**SMOKE_TRAIN, "name": f"async{staleness}", "run_dir": str(root / f"s{staleness}"),
              "async.max_staleness": staleness, "trainer.max_steps": steps, "tasks.n_per_level": 400,
              "rollout.prompts_per_step": 4, "rollout.n_samples": 4, "rollout.max_tokens": 48}
    cfg = load_config(TrainConfig, None, as_overrides(values))
    Orchestrator(cfg, progress=False).run()
    rows = RunDir(Path(cfg.run_dir)).read_metrics()
    samples = sum(r["samples"] for r in rows[1:])
    return samples / (rows[-1]["time"] - rows[0]["time"])


def main() -> None:
    args = parse_args(__doc__)
    from peirce.actors.runtime import ensure_ray

    ensure_ray()
    steps = 6 if args.quick else 16
    with tempfile.TemporaryDirectory() as tmp:
        sync = _throughput(0, steps, Path(tmp))
        async_ = _throughput(2, steps, Path(tmp))
    emit("async", "trained_samples_per_s_staleness0", round(sync, 3), "samples/s")
    emit("async", "trained_samples_per_s_staleness2", round(async_, 3), "samples/s", baseline=round(sync, 3))


if __name__ == "__main__":
    main()
