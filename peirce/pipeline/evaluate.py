"""Evaluate every checkpoint of the recipe with one vLLM engine.

All checkpoints share the base architecture, so instead of starting an engine per
checkpoint (~1 min each on a CPU) one engine is started once and each checkpoint's
weights are loaded into it in place, as the trainer does for weight sync. Results of
a checkpoint already evaluated (results.json present) are reused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from peirce.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)


def checkpoint_tensors(model_dir: Path) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights")
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def _evaluate_all(eval_cfg: dict[str, Any], checkpoints: dict[str, str], out_root: str) -> dict[str, str]:
    from peirce.eval.runner import evaluate
    from peirce.eval.suites import SuiteOptions
    from peirce.rollout.engine import RolloutEngine

    out: dict[str, str] = {}
    todo = {}
    for name, path in checkpoints.items():
        result = Path(out_root) / name / "results.json"
        if result.exists():
            out[name] = str(result)
        else:
            todo[name] = path
    if not todo:
        return out
    first = next(iter(todo.values()))
    engine = RolloutEngine(first, max_model_len=eval_cfg["max_model_len"], seed=0)
    try:
        for i, (name, path) in enumerate(todo.items()):
            if i > 0:
                engine.load_weights(checkpoint_tensors(Path(path)), version=i)
            log.info("evaluating %s (%s)", name, path)
            evaluate(path, eval_cfg["suites"], n=eval_cfg["n"], temperature=eval_cfg["temperature"],
                     max_tokens=eval_cfg["max_tokens"], k_values=eval_cfg["k"], out_dir=Path(out_root) / name,
                     suite_options=SuiteOptions(limit=eval_cfg["limit"], levels=tuple(eval_cfg["levels"])),
                     engine=engine)
            out[name] = str(Path(out_root) / name / "results.json")
    finally:
        engine.close()
    return out


def evaluate_checkpoints(pc: PipelineConfig, checkpoints: dict[str, Path], out_root: Path,
                         max_model_len: int = 2048) -> dict[str, Path]:
    """name -> results.json, evaluated in a Ray task (it lands on a GPU when the cluster has one)."""
    cfg = {**pc.eval.model_dump(mode="json"), "max_model_len": max_model_len}
    remote = ray.remote(num_cpus=1)(_evaluate_all)
    paths = ray.get(remote.remote(cfg, {k: str(v) for k, v in checkpoints.items()}, str(out_root)))
    return {name: Path(paths[name]) for name in checkpoints}
