"""`peirce run`: stage A -> B -> C -> evaluation -> report, resumable.

Every stage leaves a marker when complete, so a re-run after a crash skips what is
done; a specialist or domain run with a checkpoint but no DONE resumes from it. The
driver holds no model: RL runs are Controller actors sharing the cluster, the merge is
a MergeActor, evaluation runs engine by engine.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from peirce.config import TrainConfig, dump_config
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.resolve import base_model, domain_configs, specialist_configs
from peirce.trainer.orchestrator import resolve_model
from peirce.trainer.run_dir import RunDir

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    pass


def run_concurrently(configs: dict[str, TrainConfig], stage: str) -> dict[str, Path]:
    """Train several runs at once in the cluster; one progress bar per run."""
    from peirce.actors.controller import ControllerActor

    pending: dict[str, Any] = {}
    for name, cfg in configs.items():
        run = RunDir(Path(cfg.run_dir))
        if run.done_path.exists():
            log.info("%s/%s already complete; skipping", stage, name)
            continue
        resume = run.latest_checkpoint() is not None
        pending[name] = ControllerActor.remote(cfg.model_dump(mode="json", by_alias=True), resume)
    refs = {name: actor.run.remote() for name, actor in pending.items()}
    bars = {name: tqdm(total=configs[name].trainer.max_steps, desc=f"{stage}/{name}", dynamic_ncols=True)
            for name in refs}
    try:
        while refs:
            done, _ = ray.wait(list(refs.values()), timeout=2.0)
            for name, bar in bars.items():
                rows = RunDir(Path(configs[name].run_dir)).read_metrics()
                if rows:
                    bar.n = rows[-1]["step"]
                    bar.set_postfix(reward=f"{rows[-1]['reward_mean']:.2f}", level=rows[-1].get("level"))
                    bar.refresh()
            for ref in done:
                name = next(n for n, r in refs.items() if r == ref)
                try:
                    ray.get(ref)
                except Exception as exc:
                    raise StageError(f"{stage}: run {name!r} failed: {exc}") from exc
                del refs[name]
    finally:
        for bar in bars.values():
            bar.close()
        for actor in pending.values():
            ray.kill(actor)
    out = {}
    for name, cfg in configs.items():
        model = RunDir(Path(cfg.run_dir)).model_dir()
        if model is None:
            raise StageError(f"{stage}: run {name!r} finished without a checkpoint")
        out[name] = model
    return out


def stage_merge(pc: PipelineConfig, specialists: dict[str, Path]) -> Path:
    from peirce.actors.merge_actor import MergeActor

    out = Path(pc.run_dir) / "stage_b" / "merged"
    if (out / "config.json").exists() and (out / "merge.yaml").exists():
        log.info("stage B already complete; skipping")
        return out
    sb = pc.stage_b
    cfg: dict[str, Any] = {"method": sb.method, "models": {k: str(v) for k, v in specialists.items()},
                           "weights": {k: sb.weights.get(k, 0.0) for k in specialists}, "normalize": sb.normalize}
    if sb.method != "linear":  # task vectors are taken relative to the base model
        cfg["base_model"] = str(resolve_model(base_model(pc)))
    if sb.density is not None:
        cfg["density"] = sb.density
    actor = MergeActor.remote()
    try:
        return Path(ray.get(actor.merge.remote(cfg, str(out))))
    finally:
        ray.kill(actor)


def run_pipeline(pc: PipelineConfig) -> Path:
    root = Path(pc.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.yaml").write_text(json.dumps(pc.model_dump(mode="json"), indent=2))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    spec_cfgs = specialist_configs(pc)
    for cfg in spec_cfgs.values():
        RunDir.create(cfg.run_dir)
        if not Path(cfg.run_dir, "config.yaml").exists():
            dump_config(cfg, Path(cfg.run_dir) / "config.yaml")
    specialists = run_concurrently(spec_cfgs, "stage_a")
    timings["stage_a"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    merged = stage_merge(pc, specialists)
    timings["stage_b"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    domain = run_concurrently(domain_configs(pc, str(merged)), "stage_c")
    timings["stage_c"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from peirce.pipeline.evaluate import evaluate_checkpoints

    checkpoints = {"base": resolve_model(base_model(pc)), **specialists, "merged": merged, **domain}
    results = evaluate_checkpoints(pc, checkpoints, root / "eval")
    timings["eval"] = time.perf_counter() - t0

    from peirce.pipeline.report import write_report

    report = write_report(pc, root, {**spec_cfgs, **domain_configs(pc, str(merged))}, results, timings)
    (root / "DONE").write_text(json.dumps(timings))
    return report
