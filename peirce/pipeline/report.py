"""The run report: Markdown plus PNG plots (warm-up loss, reward per step, evaluation table).

Sections: the run (wall time, peak memory), warm-ups, training runs (with their
learning-signal flag), the evaluation table (each score with its 95% interval) and the
verdicts: per specialist whether it, and its warm-up alone, beats the base model on its
own task, what RL added over the warm-up, and whether the merged model beats base on
every MAA suite (`peirce.pipeline.comparisons`).
"""

from __future__ import annotations

import json
from pathlib import Path

from peirce.config import TrainConfig
from peirce.pipeline.comparisons import (FORMAT, domain_comparisons, merged_comparisons, run_signal,
                                         specialist_comparisons)
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.monitor import MemoryPeak
from peirce.pipeline.resolve import base_model
from peirce.sft.config import SFTConfig
from peirce.sft.loop import SFTSummary
from peirce.trainer.run_dir import RunDir


def _plot_metric(run_dirs: dict[str, str], key: str, path: Path, *, xlabel: str, ylabel: str, title: str) -> None:
    """One line per run: `key` of each metrics.jsonl row against its step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, run_dir in run_dirs.items():
        rows = RunDir(Path(run_dir)).read_metrics()
        if rows:
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_rewards(runs: dict[str, TrainConfig], path: Path) -> None:
    _plot_metric({n: c.run_dir for n, c in runs.items()}, "reward_mean", path, xlabel="learner step",
                 ylabel="mean reward of the batch", title="Reward per step")


def _plot_table(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols, rows = table.columns, table.rows
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cols) + 2), 4.5))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(cols))
    for i, row in enumerate(rows):
        vals = [100 * (row.cells[c] or 0.0) for c in cols]
        ax.bar(x + i * width, vals, width, label=row.name)
    ax.set_xticks(x + width * (len(rows) - 1) / 2, cols, rotation=15, fontsize=8)
    ax.set_ylabel(f"{table.metric} (%)")
    ax.set_title("Evaluation")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ordered(names) -> list[str]:
    """Base, then per specialist its warm-up and its RL run, merged, domain runs, then the rest."""
    order = ["base"]
    for spec in ("deduction", "induction", "abduction"):
        order += [f"{spec}-warmup", spec]
    order += ["merged", "domain-from-merged", "domain-from-base"]
    return [n for n in order if n in names] + [n for n in names if n not in order and n.endswith("-warmup")] + \
        [n for n in names if n not in order and not n.endswith("-warmup")]


def _run_lines(timings: dict[str, float], memory: MemoryPeak | None) -> list[str]:
    lines = ["## Run", "", f"Wall time of this invocation: {sum(timings.values()):.0f} s "
             f"({sum(timings.values()) / 60:.1f} min; stages skipped as already complete cost ~0).", ""]
    if memory is not None:
        lines += [f"Peak memory (sampled every {memory.interval_s:g} s, {memory.samples} samples): "
                  f"{memory.rss_sum_gib:.1f} GiB summed RSS of the driver's process tree (shared pages counted "
                  f"per process, so an upper bound); machine memory in use peaked at "
                  f"{memory.system_used_gib:.1f} of {memory.system_total_gib:.1f} GiB "
                  f"({memory.system_used_at_start_gib:.1f} GiB in use at start).", ""]
    by_stage = memory.system_used_by_stage_gib if memory is not None else {}
    if by_stage:
        lines += ["| stage | seconds | peak machine memory (GiB) |", "|---|---:|---:|",
                  *[f"| {k} | {v:.0f} | {by_stage[k]:.1f} |" if k in by_stage else f"| {k} | {v:.0f} | - |"
                    for k, v in timings.items()], ""]
    else:
        lines += ["| stage | seconds |", "|---|---:|", *[f"| {k} | {v:.0f} |" for k, v in timings.items()], ""]
    return lines


def _warmup_lines(warmups: dict[str, SFTConfig]) -> list[str]:
    if not warmups:
        return []
    lines = ["## Warm-up (supervised, worked solutions)", "",
             "| specialist | levels | examples | steps | lr | first loss | last loss | seconds | checkpoint |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, cfg in warmups.items():
        done = RunDir(Path(cfg.run_dir)).done_path
        if done.exists():
            s = SFTSummary.read(done)
            lines.append(f"| {name} | {cfg.levels} | {s.examples} | {s.steps} | {cfg.lr:g} | {s.first_loss:.3f} | "
                         f"{s.last_loss:.3f} | {s.seconds:.0f} | `{s.model_dir}` |")
    return [*lines, "", "![warm-up loss](warmup_loss.png)", ""]


def _verdict_lines(pc: PipelineConfig, specs: dict[str, list[str]], loaded: dict, metric: str, *,
                   by_level: bool = False) -> list[str]:
    lines = [f"- {c.sentence()}"
             for c in specialist_comparisons(loaded, specs, pc.eval.suites, metric, by_level=by_level)]
    merged, beats_all = merged_comparisons(loaded, pc.eval.suites, metric, by_level=by_level)
    if merged:
        where = "MAA suite levels" if by_level else "MAA suites"
        lines += ["", f"Merged vs base on all {len(merged)} {where}: "
                      f"{'**beats base on all of them**' if beats_all else '**does not beat base on all of them**'}."]
        lines += [f"- {c.sentence()}" for c in merged]
    if not by_level and (domain := domain_comparisons(loaded, pc.eval.suites, metric)):
        lines += ["", "Domain RL (stage C), from the merged model vs from the base:"]
        lines += [f"- {c.sentence()}" for c in domain]
    return lines


def _level_lines(pc: PipelineConfig, specs: dict[str, list[str]], loaded: dict, metric: str) -> list[str]:
    """The evaluation table and the verdicts per level, for suites that hold several levels."""
    from peirce.eval.report import build_level_table

    table = build_level_table(list(loaded.items()), metric=metric)
    if table is None:
        return []
    return ["## By level", "",
            "The same scores split by puzzle level (a suite's mean can hide that a gain is all on L1).", "",
            table.to_markdown(), *_verdict_lines(pc, specs, loaded, metric, by_level=True), ""]


def _comparison_lines(pc: PipelineConfig, specs: dict[str, list[str]], loaded: dict, metric: str) -> list[str]:
    return ["## Verdicts", "",
            f"{metric} with 95% intervals; \"beats\" only when the intervals do not overlap, otherwise \"not "
            "distinguishable\". Warm-up vs base and specialist vs base say whether each beats the base model on "
            "its own task; specialist vs warm-up is what RL added.", "",
            *_verdict_lines(pc, specs, loaded, metric), "",
            "### Format adherence", "",
            "The same comparisons on the share of responses in the `<think>...</think><answer>...</answer>` "
            "format (Wilson interval over samples): what the warm-up is for, visible even where every score is 0.",
            "", *_verdict_lines(pc, specs, loaded, FORMAT), ""]


def write_report(pc: PipelineConfig, root: Path, runs: dict[str, TrainConfig], results: dict[str, Path],
                 timings: dict[str, float], *, warmups: dict[str, SFTConfig] | None = None,
                 memory: MemoryPeak | None = None) -> Path:
    from peirce.eval.report import build_table
    from peirce.eval.runner import load_result

    warmups = warmups or {}
    ordered = _ordered(list(results))
    metric = f"pass@{min(pc.eval.k)}"
    loaded = {n: load_result(results[n]) for n in ordered}
    table = build_table([(n, loaded[n]) for n in ordered], metric=metric)
    specs = {n: list(runs[n].tasks.families) for n in pc.stage_a.specialists if n in runs}  # specialist -> task
    (root / "eval_table.json").write_text(json.dumps(table.to_json(), indent=2))
    _plot_rewards(runs, root / "reward_per_step.png")
    _plot_table(table, root / "eval_table.png")
    if warmups:
        _plot_warmups(warmups, root / "warmup_loss.png")
    lines = [f"# peirce run report: {pc.name}", "",
             f"Base model: `{base_model(pc)}` (profile {pc.profile}). Merge: {pc.stage_b.method}, weights "
             f"{pc.stage_b.weights} (normalize={pc.stage_b.normalize}).", "",
             *_run_lines(timings, memory), *_warmup_lines(warmups),
             "## Training runs", "",
             "| run | steps | first reward | last reward | last level | learning signal | run dir |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name, cfg in runs.items():
        rows = RunDir(Path(cfg.run_dir)).read_metrics()
        if rows:
            lines.append(f"| {name} | {rows[-1]['step']} | {rows[0]['reward_mean']:.3f} | "
                         f"{rows[-1]['reward_mean']:.3f} | {rows[-1].get('level', '-')} | "
                         f"{run_signal(Path(cfg.run_dir)).text} | `{cfg.run_dir}` |")
    lines += ["", "![reward per step](reward_per_step.png)", "", "## Evaluation", "",
              f"Suites: {', '.join(pc.eval.suites)}; n={pc.eval.n}, temperature={pc.eval.temperature}. "
              + ("Every checkpoint on every suite." if pc.eval.every_suite else
                 "Base and merged on every suite; each specialist and its warm-up on its own task's suite; domain "
                 "runs on the other suites (- = not evaluated there)."), "",
              "| suite | problems |", "|---|---:|",
              *[f"| {s} | {_problems(loaded, s)} |" for s in pc.eval.suites], "",
              table.to_markdown(), "![evaluation](eval_table.png)", "",
              *_comparison_lines(pc, specs, loaded, metric), *_level_lines(pc, specs, loaded, metric)]
    report = root / "report.md"
    report.write_text("\n".join(lines))
    summary = [f"{metric} with 95% intervals ({sum(timings.values()) / 60:.1f} min):", "", table.to_markdown(),
               *_verdict_lines(pc, specs, loaded, metric), "", *_level_lines(pc, specs, loaded, metric)]
    (root / SUMMARY).write_text("\n".join(summary))
    return report


SUMMARY = "summary.md"  # the evaluation table and verdicts alone: what `peirce run` prints at the end


def _problems(loaded: dict, suite: str) -> str:
    counts = sorted({r.suites[suite].tasks for r in loaded.values() if suite in r.suites})
    return "/".join(map(str, counts)) or "-"


def _plot_warmups(warmups: dict[str, SFTConfig], path: Path) -> None:
    _plot_metric({n: c.run_dir for n, c in warmups.items()}, "sft_loss", path, xlabel="optimizer step",
                 ylabel="SFT loss (token-mean NLL of the worked solution)", title="Warm-up loss per step")

