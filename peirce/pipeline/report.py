"""The run report: Markdown plus PNG plots (reward per step; the evaluation table)."""

from __future__ import annotations

import json
from pathlib import Path

from peirce.config import TrainConfig
from peirce.pipeline.config import PipelineConfig
from peirce.pipeline.resolve import base_model
from peirce.trainer.run_dir import RunDir

ORDER = ("base", "deduction", "induction", "abduction", "merged", "domain-from-merged", "domain-from-base")


def _plot_rewards(runs: dict[str, TrainConfig], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, cfg in runs.items():
        rows = RunDir(Path(cfg.run_dir)).read_metrics()
        if rows:
            ax.plot([r["step"] for r in rows], [r["reward_mean"] for r in rows], marker="o", label=name)
    ax.set_xlabel("learner step")
    ax.set_ylabel("mean reward of the batch")
    ax.set_title("Reward per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def write_report(pc: PipelineConfig, root: Path, runs: dict[str, TrainConfig], results: dict[str, Path],
                 timings: dict[str, float]) -> Path:
    from peirce.eval.report import build_table
    from peirce.eval.runner import load_result

    ordered = [n for n in ORDER if n in results] + [n for n in results if n not in ORDER]
    metric = f"pass@{min(pc.eval.k)}"
    table = build_table([(n, load_result(results[n])) for n in ordered], metric=metric)
    (root / "eval_table.json").write_text(json.dumps(table.to_json(), indent=2))
    _plot_rewards(runs, root / "reward_per_step.png")
    _plot_table(table, root / "eval_table.png")
    lines = [f"# peirce run report: {pc.name}", "",
             f"Base model: `{base_model(pc)}` (profile {pc.profile}). Merge: {pc.stage_b.method}, weights "
             f"{pc.stage_b.weights} (normalize={pc.stage_b.normalize}).", "",
             "## Stage timings", "", "| stage | seconds |", "|---|---:|",
             *[f"| {k} | {v:.0f} |" for k, v in timings.items()], "",
             "## Training runs", "", "| run | steps | first reward | last reward | last level | run dir |",
             "|---|---:|---:|---:|---:|---|"]
    for name, cfg in runs.items():
        rows = RunDir(Path(cfg.run_dir)).read_metrics()
        if rows:
            lines.append(f"| {name} | {rows[-1]['step']} | {rows[0]['reward_mean']:.3f} | "
                         f"{rows[-1]['reward_mean']:.3f} | {rows[-1].get('level', '-')} | `{cfg.run_dir}` |")
    lines += ["", "![reward per step](reward_per_step.png)", "", "## Evaluation", "",
              f"Suites: {', '.join(pc.eval.suites)}; n={pc.eval.n}, temperature={pc.eval.temperature}, "
              f"at most {pc.eval.limit or 'all'} problems per suite.", "", table.to_markdown(),
              "![evaluation](eval_table.png)", ""]
    report = root / "report.md"
    report.write_text("\n".join(lines))
    return report
