"""Asynchrony: end-to-end trained samples/s at max_staleness 2 vs 0 (synchronous), same model,
task and budgets (tiny random Llama on the toy task; every part real), with long-tailed
response lengths so that overlap and stragglers are measured.

Lengths: real RL responses are long-tailed (most short, a few near the limit), and the
slowest group of a step is what a synchronous run waits for. Each admitted group gets its
own `max_tokens` drawn from a lognormal (median 24, sigma 1.0, clipped to [4, 224]: p90 ~86)
through the per-request sampling the rollout request carries (`TaskMsg.sampling.max_tokens`);
the random tiny model almost never samples EOS, so the draw is the response length
(`response_length_mean` reports what was generated). The draw is injected by wrapping the
driver's `planner.admit` here, in the benchmark: the run config has one `max_tokens` for all.

Three workloads (`WORKLOADS`): "default" (4 prompts x 4 samples), where the tiny model's learner
is the busier role; "balanced" (4 x 2), where learner and rollout are each busy about half
of a synchronous step, the case whose limit is 2x; "stragglers" (4 x 1, a heavier tail up to 480
tokens), where the rollout engine is the busier role. Runs, per workload: synchronous
(max_staleness 0), then asynchronous (2) batch by batch, with partial rollouts
(`rollout.interrupt_on_new_weights`: a batch in progress takes newer weights between decode
steps instead of finishing under the old ones), with continuous rollout (`rollout.continuous`),
and with both.

Throughput per learner step = samples / time since the previous step (start-up excluded);
the figure is the median over steps, then the median over seeds (`--quick`: 10 steps, one
seed; full: 30 steps, seeds 0 1 2). ratio = async / sync; `overall_ratio` is the same from
total samples over total time, which the stragglers weigh on more. Each line also says where
time goes: the learner's and the rollout engine's idle share (medians over steps, as
`peirce_idle_ratio`), and `overlap_bound`, the most asynchrony can give for the workload (the
synchronous step over the busier role's busy time), with `fraction_of_bound` reached.
`step_s_p90 / step_s_median` shows the stragglers. `--engine separate` runs vLLM's engine in
processes of its own instead of inside each rollout worker (the CPU default), to measure what
the in-process engine changes (README "Asynchrony on 2 cores").
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, parse_args  # noqa: E402

BENCH = "async"
LENGTHS = {"median": 24, "sigma": 1.0, "lo": 4, "hi": 224}


@dataclasses.dataclass(frozen=True)
class Workload:
    """Samples per prompt (4 prompts per step) and the response-length distribution."""

    samples: int
    lengths: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(LENGTHS))


# "default": 4 x 4, where the tiny model's learner (its 49k-token head dominates) is busy ~60%
# of a synchronous step, so perfect overlap can give only ~1.65x. "balanced": 4 x 2, where
# learner and rollout are each busy about half of a synchronous step: the two-equal-resources
# case whose limit is 2x. "stragglers": 4 x 1 with a heavier tail (sigma 1.6, up to 480
# tokens): the rollout engine is the busier role and one long group holds a batch, the case
# continuous rollout is for (a group is answered as it ends, another joins between steps).
WORKLOADS = {"default": Workload(4), "balanced": Workload(2),
             "stragglers": Workload(1, {**LENGTHS, "sigma": 1.6, "hi": 480})}


def long_tail_lengths(seed: int, *, median: float, sigma: float, lo: int, hi: int) -> Iterator[int]:
    """Endless lognormal response lengths (median `median`, log-space sd `sigma`) clipped to [lo, hi]."""
    if not (median > 0 and sigma >= 0 and 1 <= lo <= hi):
        raise ValueError(f"median={median!r}, sigma={sigma!r}, lo={lo!r}, hi={hi!r}: need median > 0, "
                         "sigma >= 0, 1 <= lo <= hi")
    rng = random.Random(seed)
    while True:
        yield min(hi, max(lo, round(rng.lognormvariate(math.log(median), sigma))))


class LongTailAdmission:
    """Stands in for `planner.admit`: every group it admits gets its own drawn `max_tokens`,
    in the dispatched message and in the planner's book (so a re-dispatch keeps it)."""

    def __init__(self, planner: Any, lengths: Iterator[int]) -> None:
        self.planner, self.lengths, self._admit = planner, lengths, planner.admit
        self.drawn: list[int] = []

    def __call__(self, source: Any) -> list:
        import msgspec

        out = []
        for submit in self._admit(source):
            if submit.queue != "rollout" or len(submit.messages) != 1:
                raise TypeError(f"LongTailAdmission: expected one rollout TaskMsg per admitted group, got "
                                f"queue={submit.queue!r} with {len(submit.messages)} messages (MASA runs are not "
                                "supported here)")
            (msg,) = submit.messages
            n = next(self.lengths)
            msg = msgspec.structs.replace(msg, sampling=msgspec.structs.replace(msg.sampling, max_tokens=n))
            self.planner.groups[submit.gid].msg = msg
            self.drawn.append(n)
            out.append(dataclasses.replace(submit, messages=(msg,)))
        return out


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_config(staleness: int, steps: int, seed: int, root: Path, partial: bool = False,
               n_samples: int = WORKLOADS["default"].samples, engine_in_process: bool | None = None,
               continuous: bool = False, max_tokens: int = LENGTHS["hi"]) -> Any:
    """The TrainConfig of one run (the smoke profile; `engine_in_process` None keeps the default)."""
    from peirce.config import TrainConfig, load_config
    from peirce.config.profiles import SMOKE_TRAIN, as_overrides

    tag = f"n{n_samples}_s{staleness}{'_partial' if partial else ''}{'_continuous' if continuous else ''}"
    values = {**SMOKE_TRAIN, "name": f"async-{tag}", "run_dir": str(root / f"{tag}_seed{seed}"),
              "async.max_staleness": staleness, "rollout.interrupt_on_new_weights": partial,
              "rollout.continuous": continuous,
              "trainer.max_steps": steps, "trainer.seed": seed,
              "tasks.n_per_level": 1000, "rollout.prompts_per_step": 4, "rollout.n_samples": n_samples,
              "rollout.max_tokens": max_tokens,
              # the prompt needs room beside the longest response (the toy task's prompts are short)
              "model.max_model_len": max(SMOKE_TRAIN["model.max_model_len"], max_tokens + 32)}
    if engine_in_process is not None:  # None: the config's default (an override cannot say null)
        values["rollout.engine_in_process"] = engine_in_process
    return load_config(TrainConfig, None, as_overrides(values))


def _run(variant: Variant, steps: int, seed: int, root: Path, engine_in_process: bool | None = None
         ) -> dict[str, float]:
    from peirce.trainer.orchestrator import Orchestrator
    from peirce.trainer.run_dir import RunDir

    staleness = variant.staleness
    workload = WORKLOADS[variant.workload]
    lengths = workload.lengths
    cfg = run_config(staleness, steps, seed, root, variant.partial, workload.samples, engine_in_process,
                     variant.continuous, max_tokens=int(lengths["hi"]))
    orch = Orchestrator(cfg, progress=False)
    admission = LongTailAdmission(orch.planner, long_tail_lengths(seed, **lengths))
    orch.planner.admit = admission
    orch.run()
    rows = RunDir(Path(cfg.run_dir)).read_metrics()
    if len(rows) < 3:
        raise RuntimeError(f"staleness={staleness} seed={seed}: {len(rows)} learner steps logged, need >= 3")
    step_s = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]
    per_step = [b["samples"] / dt for b, dt in zip(rows[1:], step_s)]
    tokens = sum(r["response_tokens"] for r in rows[1:])
    return {"samples_per_s": statistics.median(per_step),
            "overall_samples_per_s": sum(r["samples"] for r in rows[1:]) / (rows[-1]["time"] - rows[0]["time"]),
            "step_s_median": statistics.median(step_s), "step_s_p90": _quantile(step_s, 0.9),
            "response_length_mean": tokens / sum(r["samples"] for r in rows[1:]),
            "staleness_mean": statistics.fmean(r["staleness_mean"] for r in rows[1:]),
            "drawn_p50": _quantile(admission.drawn, 0.5), "drawn_p90": _quantile(admission.drawn, 0.9),
            "drawn_max": max(admission.drawn), "steps": len(rows),
            **{f"{role}_idle_ratio_median": statistics.median(r[f"{role}_idle_ratio"] for r in rows[1:])
               for role in ("learner", "rollout")}}


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median over seeds of every field."""
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}


def overlap_bound(sync: dict[str, float]) -> float:
    """The most asynchrony can give for this workload: a synchronous step's time over the
    busier role's busy time in it (1 / max busy share). Perfect overlap hides the other role
    and every gap; contention for the same cores (2 here) keeps a real run below it.

    A bound only while the busier role's throughput is fixed: true of the learner (a step
    trains one batch), not of a rollout engine, which asynchrony hands the groups of several
    steps at once (a bigger decode batch for nearly the same time per decode step). Where
    the rollout engine is the busier role (`busier_role`), runs can pass it."""
    busiest = max(1.0 - sync["learner_idle_ratio_median"], 1.0 - sync["rollout_idle_ratio_median"])
    return round(1.0 / busiest, 3) if busiest > 0 else float("nan")


def busier_role(sync: dict[str, float]) -> str:
    """Which role the synchronous run kept busier: the one `overlap_bound` is taken from."""
    return "learner" if sync["learner_idle_ratio_median"] <= sync["rollout_idle_ratio_median"] else "rollout"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One configuration measured: workload, max_staleness, partial rollouts, continuous rollout."""

    workload: str
    staleness: int
    partial: bool = False
    continuous: bool = False

    @property
    def name(self) -> str:
        return (f"trained_samples_per_s_{self.workload}_staleness{self.staleness}"
                f"{'_partial' if self.partial else ''}{'_continuous' if self.continuous else ''}")


# Each workload's synchronous run (first) is its baseline. Asynchronous: batch by batch, with
# partial rollouts, and with continuous rollout (rollout.continuous) without and with them.
VARIANTS = [Variant(workload, 0) for workload in WORKLOADS] + [
    Variant(workload, 2, partial, continuous) for workload in WORKLOADS
    for continuous in (False, True) for partial in (False, True)]


def selected(only: str) -> list[Variant]:
    """The variants whose name `only` (a regular expression) matches, each after its workload's
    synchronous baseline; a workload none of whose variants match runs nothing."""
    pattern = re.compile(only)
    chosen = [v for v in VARIANTS if v.staleness > 0 and pattern.search(v.name)]
    return [v for v in VARIANTS if v in chosen or (v.staleness == 0 and any(w.workload == v.workload for w in chosen))]


def main() -> None:
    def extra_args(p: Any) -> None:
        p.add_argument("--engine", choices=("auto", "in_process", "separate"), default="auto",
                       help="where each rollout worker runs vLLM's engine (rollout.engine_in_process; auto: "
                            "in-process on CPU)")
        p.add_argument("--only", default="", help="run only the variants whose metric name this regular expression "
                                                  "matches anywhere (e.g. 'stragglers', 'balanced_staleness2$'; each "
                                                  "workload's synchronous baseline always runs)")
        p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: 1 quick, 3 full)")

    args = parse_args(__doc__, extra=extra_args)
    engine_in_process = {"auto": None, "in_process": True, "separate": False}[args.engine]
    from peirce.actors.runtime import ensure_ray

    ensure_ray()
    steps, seeds = (10, (0,)) if args.quick else (30, (0, 1, 2))
    if args.seeds is not None:
        seeds = tuple(range(args.seeds))
    variants = selected(args.only)
    extra = {"seeds": len(seeds), "steps_per_run": steps, "prompts_per_step": 4, "lengths": "lognormal",
             "engine": args.engine}
    sync: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            workload, staleness, n = variant.workload, variant.staleness, WORKLOADS[variant.workload].samples
            extra.update({f"length_{k}": v for k, v in WORKLOADS[workload].lengths.items()})
            fields = _summary([_run(variant, steps, seed, Path(tmp), engine_in_process) for seed in seeds])
            value = fields.pop("samples_per_s")
            name = variant.name
            if staleness == 0:
                sync[workload] = {**fields, "samples_per_s": value}
                emit(BENCH, name, value, "samples/s", workload=workload, samples_per_prompt=n,
                     overlap_bound=overlap_bound(sync[workload]), busier_role=busier_role(sync[workload]),
                     **fields, **extra)
                continue
            base = sync[workload]
            bound = overlap_bound(base)
            ratio = value / base["samples_per_s"]
            emit(BENCH, name, value, "samples/s", baseline=base["samples_per_s"], workload=workload,
                 samples_per_prompt=n, overlap_bound=bound, busier_role=busier_role(base),
                 fraction_of_bound=round(ratio / bound, 3),
                 overall_ratio=round(fields["overall_samples_per_s"] / base["overall_samples_per_s"], 3),
                 partial=variant.partial, continuous=variant.continuous, **fields, **extra)


if __name__ == "__main__":
    main()
