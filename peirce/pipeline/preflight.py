"""Memory preflight of `peirce run`: estimate each stage's peak before Ray starts, and refuse
a config that cannot fit with a message naming what to cut.

Why: on a small box a stage that does not fit is killed by Ray's OOM monitor minutes in,
with an error about a worker, not about the config. The estimate (pure) is per stage,
because stages run one after another and only the runs of one stage share memory:

- learner (per RL run or warm-up): parameters x bytes for weights + gradients + AdamW's
  two moments (+ fp32 master weights under bf16, + a frozen reference copy when
  algorithm.kl_coef > 0), plus a runtime constant (torch, DeepSpeed, activations);
- rollout engine (per rollout worker): weights twice (vLLM's copy and the weight inbox
  that receives each new version), its KV cache (rollout.kv_cache_gib), plus a runtime
  constant (vLLM's three processes); a role on a GPU keeps only its runtime on the host;
- per RL run a Controller and its reward workers; once, the driver and Ray itself.

Weight-sync buffers are inside these peaks: the learner holds two packed copies of the
weights (the publisher's reused bucket sets) and each engine one staging copy in /dev/shm.
Before they were reused they were allocated per publish and per load, so the same copies
existed at each process's peak (a new version packed while the last was still held, a file
written beside the received frames) and are in the measured constants; reuse makes them
permanent, which moves no per-process peak, and the estimate sums peaks.

The constants (`Footprint`) were measured here (machine memory in use, total - available,
sampled while one `peirce train` of SmolLM2-135M in fp32, one `peirce sft` and one
smoke `peirce run` ran) and rounded up, so the estimate errs on the safe side: one
specialist run with the driver, estimated 7.5 GiB, measured 6.9 GiB; the smoke
pipeline's stage A (three tiny runs), estimated 10.3 GiB, measured 9.4 GiB.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from peirce.config import TrainConfig
from peirce.pipeline.config import PipelineConfig
from peirce.sft.config import SFTConfig

GIB = 2**30


class PreflightError(RuntimeError):
    """The config needs more memory than the budget; the message says what to cut."""


@dataclass(frozen=True)
class Footprint:
    """Measured memory besides weights, optimizer state and KV cache (see the module docstring):
    a process's fixed GiB (torch, DeepSpeed or vLLM themselves) plus bytes per parameter
    (activations, buffers, allocator slack), fitted to one run of SmolLM2-135M and one smoke
    run of the 3.5M tiny Llama."""

    driver: float = 1.0  # `peirce run` + Ray's gcs, raylet, agents, idle workers
    controller: float = 0.35  # one Controller actor (an RL run's orchestrator)
    reward_worker: float = 0.15
    learner_fixed: float = 0.6
    learner_bytes_per_param: float = 4.8  # 0.6 GiB at 135M: activations at the default micro-batches
    sft_fixed: float = 0.6
    sft_bytes_per_param: float = 7.2  # warm-up: longer sequences, no gradient checkpointing
    engine_fixed: float = 0.9  # a vLLM engine's three processes
    engine_bytes_per_param: float = 3.2

    def learner_runtime(self, params: int) -> float:
        return self.learner_fixed + self.learner_bytes_per_param * params / GIB

    def sft_runtime(self, params: int) -> float:
        return self.sft_fixed + self.sft_bytes_per_param * params / GIB

    def engine_runtime(self, params: int) -> float:
        return self.engine_fixed + self.engine_bytes_per_param * params / GIB


@dataclass(frozen=True)
class Item:
    what: str  # the kind of process, e.g. "learner"
    count: int
    each_gib: float
    cut: str | None  # what to do to lower it (None: fixed); "{n}" is the count of such items
    run: str = ""  # the run it belongs to

    @property
    def total_gib(self) -> float:
        return self.count * self.each_gib


@dataclass(frozen=True)
class StageNeed:
    stage: str
    items: tuple[Item, ...]

    @property
    def total_gib(self) -> float:
        return sum(i.total_gib for i in self.items)


def learner_gib(params: int, bf16: bool, ref_model: bool, runtime: float) -> float:
    per_param = (2 + 4 + 4 + 8) if bf16 else (4 + 4 + 8)  # weights, grads (fp32 buffer), [master], AdamW m+v
    ref = (2 if bf16 else 4) if ref_model else 0
    return params * (per_param + ref) / GIB + runtime


def engine_gib(params: int, dtype_bytes: int, kv_cache_gib: float, runtime: float, on_gpu: bool = False) -> float:
    return runtime if on_gpu else 2 * params * dtype_bytes / GIB + kv_cache_gib + runtime


def _dtype_bytes(dtype: str, native_bf16: bool) -> int:
    if dtype == "auto":
        return 2 if native_bf16 else 4
    return 4 if dtype == "float32" else 2


def _bf16(precision: str, native_bf16: bool) -> bool:
    return native_bf16 if precision == "auto" else precision == "bf16"


def run_items(name: str, cfg: TrainConfig, params: int, native_bf16: bool, fp: Footprint = Footprint()) -> list[Item]:
    """What one RL run holds: learner, rollout engines, reward workers, controller."""
    lc, rc = cfg.learner, cfg.rollout
    ref = cfg.algorithm.kl_coef > 0
    runtime = fp.learner_runtime(params)
    learner = runtime if lc.num_gpus > 0 else learner_gib(params, _bf16(lc.precision, native_bf16), ref, runtime)
    engine = engine_gib(params, _dtype_bytes(cfg.model.dtype, native_bf16), rc.kv_cache_gib,
                        fp.engine_runtime(params), on_gpu=rc.num_gpus > 0)
    cut_learner = ("set algorithm.kl_coef=0 (drops the frozen reference copy)" if ref
                   else "lower learner.micro_batch_size" if lc.gradient_checkpointing
                   else "set learner.gradient_checkpointing=true")
    return [Item("learner", 1, learner, cut_learner, name),
            Item(f"rollout engine (kv_cache {rc.kv_cache_gib:g} GiB)", rc.workers, engine,
                 f"lower rollout.kv_cache_gib ({{n}} x {rc.kv_cache_gib:g} GiB) or rollout.workers", name),
            Item("reward worker", cfg.reward.workers, fp.reward_worker, "lower reward.workers", name),
            Item("controller", 1, fp.controller, None, name)]


def warmup_items(name: str, cfg: SFTConfig, params: int, native_bf16: bool, fp: Footprint = Footprint()) -> list[Item]:
    each = learner_gib(params, _bf16(cfg.precision, native_bf16), False, fp.sft_runtime(params))
    return [Item("warm-up learner", 1, each, "lower stage_a.warmup.micro_batch_size", name)]


def _heaviest(groups: Sequence[list[Item]], k: int) -> list[Item]:
    ranked = sorted(groups, key=lambda g: -sum(i.total_gib for i in g))
    return [item for g in ranked[:k] for item in g]


def _stage(stage: str, groups: Sequence[list[Item]], at_once: int | None, fp: Footprint) -> StageNeed:
    k = min(len(groups), at_once or len(groups))
    return StageNeed(stage, (Item("driver and Ray", 1, fp.driver, None), *_heaviest(groups, k)))


def estimate(pc: PipelineConfig, specialists: dict[str, TrainConfig], warmups: dict[str, SFTConfig],
             domain: dict[str, TrainConfig], params: int, native_bf16: bool, fp: Footprint = Footprint(),
             at_once: int | None = None) -> list[StageNeed]:
    """Peak need of each stage; `at_once` (default pc.max_concurrent_runs) runs share a stage."""
    k = at_once if at_once is not None else pc.max_concurrent_runs
    out = []
    if warmups:
        out.append(_stage("stage_a warm-up", [warmup_items(n, c, params, native_bf16, fp) for n, c in warmups.items()],
                          k, fp))
    out.append(_stage("stage_a", [run_items(n, c, params, native_bf16, fp) for n, c in specialists.items()], k, fp))
    if domain:
        out.append(_stage("stage_c", [run_items(n, c, params, native_bf16, fp) for n, c in domain.items()], k, fp))
    eval_engine = engine_gib(params, _dtype_bytes("auto", native_bf16), pc.eval.kv_cache_gib,
                             fp.engine_runtime(params))
    out.append(StageNeed("eval", (Item("driver and Ray", 1, fp.driver, None),
                                  Item(f"evaluation engine (kv_cache {pc.eval.kv_cache_gib:g} GiB)", 1, eval_engine,
                                       f"lower eval.kv_cache_gib ({pc.eval.kv_cache_gib:g} GiB)"))))
    return out


def shortfall(needs: Sequence[StageNeed], available_gib: float) -> StageNeed | None:
    """The stage that needs the most, if it needs more than `available_gib`."""
    worst = max(needs, key=lambda n: n.total_gib)
    return worst if worst.total_gib > available_gib else None


def refusal(worst: StageNeed, available_gib: float, source: str, fewer_at_once: list[tuple[int, float]]) -> str:
    """The message: the need, the budget, the biggest items and the settings to cut."""
    items = sorted(_grouped(worst.items), key=lambda i: -i.total_gib)
    parts = ", ".join((f"{i.count} x {i.each_gib:.1f} GiB" if i.count > 1 else f"{i.each_gib:.1f} GiB")
                      + f" {i.what}" + (f" ({i.run})" if i.run else "") for i in items)
    cuts = list(dict.fromkeys(i.cut.format(n=i.count) for i in items if i.cut))
    fits = [(k, gib) for k, gib in fewer_at_once if gib <= available_gib]
    if fits:
        cuts.insert(0, f"run fewer specialists at once (max_concurrent_runs={fits[0][0]}: ~{fits[0][1]:.1f} GiB)")
    elif fewer_at_once:
        cuts.append(f"run fewer at once (max_concurrent_runs=1 still needs ~{fewer_at_once[-1][1]:.1f} GiB)")
    return (f"{worst.stage} needs ~{worst.total_gib:.1f} GiB of {available_gib:.1f} GiB {source}: {parts}. "
            f"To fit: {'; or '.join(cuts)}. (--memory-budget-gib sets the budget.)")


def _grouped(items: Sequence[Item]) -> list[Item]:
    """Items of the same kind and size as one (counts added, runs listed)."""
    groups: dict[tuple[str, float, str | None], list[Item]] = {}
    for i in items:
        if i.count:
            groups.setdefault((i.what, round(i.each_gib, 3), i.cut), []).append(i)
    return [Item(what, sum(i.count for i in g), g[0].each_gib, cut, ", ".join(i.run for i in g if i.run))
            for (what, _, cut), g in groups.items()]


def param_count(model_dir: str | Path) -> int:
    """Parameters of an HF safetensors folder, from the file headers alone (no weights read)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise PreflightError(f"{model_dir}: no *.safetensors files to count parameters from")
    total = 0
    for path in files:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                count = 1
                for dim in meta["shape"]:
                    count *= int(dim)
                total += count
    return total


def check_memory(pc: PipelineConfig, available_gib: float, source: str, params: int, native_bf16: bool,
                 fp: Footprint = Footprint()) -> list[StageNeed]:
    """Every stage's need; PreflightError when the worst does not fit `available_gib`."""
    from peirce.pipeline.resolve import domain_configs, stage_a_configs

    specialists, warmups = stage_a_configs(pc)
    domain = domain_configs(pc, None)
    needs = estimate(pc, specialists, warmups, domain, params, native_bf16, fp)
    worst = shortfall(needs, available_gib)
    if worst is None:
        return needs
    most = max(len(specialists), len(domain), len(warmups))
    current = min(most, pc.max_concurrent_runs or most)
    fewer = []
    for k in range(current - 1, 0, -1):
        need = max(n.total_gib for n in estimate(pc, specialists, warmups, domain, params, native_bf16, fp, k))
        fewer.append((k, need))
    raise PreflightError(refusal(worst, available_gib, source, fewer))


def run_preflight(pc: PipelineConfig, budget_gib: float | None = None) -> str:
    """`peirce run`'s check before Ray starts; returns a one-line summary, raises PreflightError.

    The budget is `budget_gib` or the memory available now (psutil). Skipped when joining
    a cluster (RAY_ADDRESS): the runs do not land on this machine."""
    import os

    import psutil

    from peirce.model.precision import bf16_is_native
    from peirce.pipeline.resolve import base_model
    from peirce.trainer.orchestrator import resolve_model

    if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return "memory preflight skipped: joining a Ray cluster"
    if budget_gib is None:
        available, source = psutil.virtual_memory().available / GIB, "available"
    else:
        available, source = float(budget_gib), "(--memory-budget-gib)"
    params = param_count(resolve_model(base_model(pc)))
    needs = check_memory(pc, available, source, params, bf16_is_native())
    worst = max(needs, key=lambda n: n.total_gib)
    return (f"memory preflight: peak {worst.stage} ~{worst.total_gib:.1f} GiB of {available:.1f} GiB {source} ("
            + ", ".join(f"{n.stage} {n.total_gib:.1f}" for n in needs) + ")")
