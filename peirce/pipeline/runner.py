"""`peirce run`: stage A (warm-up, then RL) -> B -> C -> evaluation -> report, resumable.

Every stage leaves a marker when complete, so a re-run after a crash skips what is
done; a specialist or domain run with a checkpoint but no DONE resumes from it, a
warm-up without DONE is redone (it is short). The driver holds no model: warm-ups are
Ray tasks, RL runs are Controller actors sharing the cluster (at most
`max_concurrent_runs` at once), the merge is a MergeActor, evaluation runs in one task
with one engine. A background thread samples memory for the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from peirce.config import TrainConfig, dump_config
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.evaluate import Checkpoint, evaluate_checkpoints
from peirce.pipeline.jobs import Job, StageError, run_jobs
from peirce.pipeline.monitor import MemorySampler
from peirce.pipeline.resolve import base_model, domain_configs, specialist_configs, stage_a_configs
from peirce.pipeline.warmup import run_warmups
from peirce.trainer.orchestrator import resolve_model
from peirce.trainer.run_dir import RunDir

log = logging.getLogger(__name__)

MEMORY_FILE = "memory_peak.json"  # the run's MemoryPeak, written with the report


def run_concurrently(configs: dict[str, TrainConfig], stage: str, max_concurrent: int | None = None
                     ) -> dict[str, Path]:
    """Train several runs in the cluster, at most `max_concurrent` at once; one progress bar per run."""
    from peirce.actors.controller import ControllerActor
    from peirce.actors.runtime import actor_log_options

    def job(name: str, cfg: TrainConfig) -> Job:
        def start():
            resume = RunDir(Path(cfg.run_dir)).latest_checkpoint() is not None
            # the driver's INFO lines to <run>/logs/controller.log; its warnings still reach the console
            actor = ControllerActor.options(**actor_log_options(cfg.run_dir, "controller")).remote(
                cfg.model_dump(mode="json", by_alias=True), resume)
            return actor.run.remote(), actor

        return Job(name=name, run_dir=Path(cfg.run_dir), total=cfg.trainer.max_steps, start=start,
                   postfix=lambda row: {"reward": f"{row['reward_mean']:.2f}", "level": row.get("level")})

    jobs = []
    for name, cfg in configs.items():
        if RunDir(Path(cfg.run_dir)).done_path.exists():
            log.info("%s/%s already complete; skipping", stage, name)
        else:
            jobs.append(job(name, cfg))
    run_jobs(jobs, stage, max_concurrent)
    out = {}
    for name, cfg in configs.items():
        model = RunDir(Path(cfg.run_dir)).model_dir()
        if model is None:
            raise StageError(f"{stage}: run {name!r} finished without a checkpoint")
        out[name] = model
    return out


def stage_merge(pc: PipelineConfig, specialists: dict[str, Path]) -> Path:
    from peirce.actors.merge_actor import MergeActor
    from peirce.actors.runtime import actor_log_options

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
    actor = MergeActor.options(**actor_log_options(pc.run_dir, "merge")).remote()  # mergekit chatter to logs/
    try:
        return Path(ray.get(actor.merge.remote(cfg, str(out))))
    finally:
        ray.kill(actor)


def _write_configs(configs: dict[str, TrainConfig]) -> None:
    for cfg in configs.values():
        RunDir.create(cfg.run_dir)
        if not Path(cfg.run_dir, "config.yaml").exists():
            dump_config(cfg, Path(cfg.run_dir) / "config.yaml")


def _checkpoints(pc: PipelineConfig, specs: dict[str, TrainConfig], warm: dict[str, Path],
                 trained: dict[str, Path], merged: Path, domain: dict[str, Path]) -> list[Checkpoint]:
    out = [Checkpoint("base", "base", str(resolve_model(base_model(pc))))]
    for name, cfg in specs.items():
        families = tuple(cfg.tasks.families)
        if name in warm:
            out.append(Checkpoint(f"{name}-warmup", "warmup", str(warm[name]), families))
        out.append(Checkpoint(name, "specialist", str(trained[name]), families))
    out.append(Checkpoint("merged", "merged", str(merged)))
    return out + [Checkpoint(name, "domain", str(path)) for name, path in domain.items()]


@contextlib.contextmanager
def _stage(title: str, key: str, timings: dict[str, float], memory: MemorySampler) -> Iterator[None]:
    """One console line when a stage starts and one when it ends; its seconds into `timings`,
    its peak memory kept apart by the sampler."""
    log.info("%s: start", title)
    memory.enter(key)
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0
    memory.enter(None)
    log.info("%s: done in %.0f s", title, timings[key])


def run_pipeline(pc: PipelineConfig) -> Path:
    """Every stage in order, each skipped when its marker says it is done; returns the report."""
    root = Path(pc.run_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.yaml").write_text(json.dumps(pc.model_dump(mode="json"), indent=2))
    memory = MemorySampler().start()
    timings: dict[str, float] = {}
    at_once = pc.max_concurrent_runs

    with _stage("stage A warm-up", "stage_a_warmup", timings, memory):
        pending_specs, warmups = stage_a_configs(pc)
        resources = {name: (cfg.learner.num_cpus, cfg.learner.num_gpus) for name, cfg in pending_specs.items()}
        warm = run_warmups(warmups, resources=resources, max_concurrent=at_once) if warmups else {}
    with _stage("stage A specialists (RL)", "stage_a", timings, memory):
        spec_cfgs = specialist_configs(pc, {name: str(path) for name, path in warm.items()})
        _write_configs(spec_cfgs)
        specialists = run_concurrently(spec_cfgs, "stage_a", at_once)
    with _stage("stage B merge", "stage_b", timings, memory):
        merged = stage_merge(pc, specialists)
    with _stage("stage C domain RL", "stage_c", timings, memory):
        dom_cfgs = domain_configs(pc, str(merged))
        domain = run_concurrently(dom_cfgs, "stage_c", at_once)
    with _stage("evaluation", "eval", timings, memory):
        checkpoints = _checkpoints(pc, spec_cfgs, warm, specialists, merged, domain)
        results = evaluate_checkpoints(pc, checkpoints, root / "eval")

    from peirce.pipeline.report import write_report

    peak = memory.stop()
    report = write_report(pc, root, {**spec_cfgs, **dom_cfgs}, results, timings, warmups=warmups, memory=peak)
    # beside the report, for tools that read a finished run back (benchmarks/reproduce_cpu.py)
    (root / MEMORY_FILE).write_text(json.dumps(dataclasses.asdict(peak)))
    (root / "DONE").write_text(json.dumps(timings))
    return report
