"""Evaluate every checkpoint of the recipe with one vLLM engine.

All checkpoints share the base architecture, so instead of starting an engine per
checkpoint (~1 min each on a CPU) one engine is started once and each checkpoint's
weights are loaded into it in place, as the trainer does for weight sync.

What is evaluated where (`eval_plan`, pure): base and merged on every suite, since the
report compares them on all three tasks; each specialist, and its warm-up alone, on its
own maa-<task> suites (the report separates what the warm-up and what RL contributed);
domain runs on the other suites. `eval.every_suite` evaluates everything everywhere.
Every (checkpoint, suite) pair has its own folder `eval/<checkpoint>/<suite>/` with
samples.jsonl and results.json, and is reused when present, so a resumed run evaluates
only what is missing; `eval/<checkpoint>/results.json` merges a checkpoint's suites.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import ray

from peirce.pipeline.config import EvalStage, PipelineConfig

log = logging.getLogger(__name__)

Kind = Literal["base", "warmup", "specialist", "merged", "domain"]


@dataclass(frozen=True)
class Checkpoint:
    name: str  # the report's row name
    kind: Kind
    path: str
    families: tuple[str, ...] = ()  # what a specialist / warm-up trained on


@dataclass(frozen=True)
class EvalItem:
    name: str
    path: str
    suites: tuple[str, ...]


def suites_for(ev: EvalStage, ckpt: Checkpoint) -> tuple[str, ...]:
    """The suites `ckpt` is evaluated on (see the module docstring)."""
    every = tuple(ev.suites)
    if ev.every_suite or ckpt.kind in ("base", "merged"):
        return every
    if ckpt.kind in ("warmup", "specialist"):
        own = tuple(s for s in every if any(s in (f"maa-{f}", f"maa-reference-{f}") for f in ckpt.families))
        return own or every
    other = tuple(s for s in every if not s.startswith("maa-"))
    return other or every


def eval_plan(ev: EvalStage, checkpoints: Sequence[Checkpoint]) -> list[EvalItem]:
    return [EvalItem(c.name, c.path, suites_for(ev, c)) for c in checkpoints]


def suite_settings(ev: EvalStage, suite: str) -> dict[str, Any]:
    """levels / per_level / limit / max_tokens of one suite: eval.per_suite over eval.*."""
    own = ev.per_suite.get(suite)
    pick = (lambda key: getattr(own, key) if own is not None and getattr(own, key) is not None else getattr(ev, key))
    return {"levels": list(pick("levels")), "per_level": pick("per_level"), "limit": pick("limit"),
            "max_tokens": pick("max_tokens")}


def suite_dir(suite: str) -> str:
    """A folder name for a suite (file suites hold ':' and '/')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", suite)


def checkpoint_tensors(model_dir: Path) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights")
    for path in files:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def merge_results(model: str, parts: Sequence[Any]) -> Any:
    """One EvalResult holding the suites of several single-suite results of one model."""
    from peirce.eval.runner import EvalResult

    suites = {name: res for part in parts for name, res in part.suites.items()}
    return EvalResult(model=model, settings=parts[0].settings, suites=suites, samples_path=None,
                      seconds=sum(p.seconds for p in parts))


def _evaluate_all(eval_cfg: dict[str, Any], items: list[dict[str, Any]], out_root: str) -> dict[str, str]:
    from peirce.eval.runner import RESULTS_FILE, evaluate, load_result, save_result
    from peirce.eval.suites import SuiteOptions, load_suite
    from peirce.rollout.engine import RolloutEngine

    ev = EvalStage.model_validate(eval_cfg["eval"])
    root = Path(out_root)
    todo = [(it, s) for it in items for s in it["suites"]
            if not (root / it["name"] / suite_dir(s) / RESULTS_FILE).exists()]
    engine, served, suites = None, None, {}
    try:
        for version, (it, suite) in enumerate(todo, 1):
            opts = suite_settings(ev, suite)
            if suite not in suites:
                suites[suite] = load_suite(suite, SuiteOptions(levels=tuple(opts["levels"]),
                                                               per_level=opts["per_level"], limit=opts["limit"]))
            if engine is None:
                engine = RolloutEngine(it["path"], max_model_len=eval_cfg["max_model_len"], seed=0,
                                       kv_cache_gib=ev.kv_cache_gib, dtype=ev.dtype, role="eval",
                                       in_process=None)  # a Ray task of its own: in-process on CPU
            elif served != it["path"]:
                engine.load_weights(checkpoint_tensors(Path(it["path"])), version=version)
            served = it["path"]
            log.info("evaluating %s on %s (%d problems)", it["name"], suite, len(suites[suite].tasks))
            evaluate(it["path"], [suites[suite]], n=ev.n, temperature=ev.temperature, max_tokens=opts["max_tokens"],
                     k_values=ev.k, out_dir=root / it["name"] / suite_dir(suite), engine=engine)
    finally:
        if engine is not None:
            engine.close()
    out = {}
    for it in items:
        parts = [load_result(root / it["name"] / suite_dir(s) / RESULTS_FILE) for s in it["suites"]]
        out[it["name"]] = str(save_result(merge_results(it["path"], parts), root / it["name"] / RESULTS_FILE))
    return out


def evaluate_checkpoints(pc: PipelineConfig, checkpoints: Sequence[Checkpoint], out_root: Path,
                         max_model_len: int = 2048) -> dict[str, Path]:
    """name -> results.json, evaluated in a Ray task (it lands on a GPU when the cluster has one);
    vLLM's output goes to <run_dir>/logs/eval.log."""
    from peirce.actors.runtime import actor_log_options

    cfg = {"eval": pc.eval.model_dump(mode="json"), "max_model_len": max_model_len}
    items = [asdict(it) for it in eval_plan(pc.eval, checkpoints)]
    remote = ray.remote(num_cpus=1)(_evaluate_all).options(**actor_log_options(pc.run_dir, "eval"))
    paths = ray.get(remote.remote(cfg, items, str(out_root)))
    return {c.name: Path(paths[c.name]) for c in checkpoints}
