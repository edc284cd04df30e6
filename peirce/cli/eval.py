"""`peirce eval`: score a model on suites (pass@k / avg@k), or compare saved results side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated ints, e.g. 1,8") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated ints >= 1")
    return values


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from peirce.eval.loaders import FORMATS

    p = sub.add_parser(
        "eval",
        help="evaluate a model on suites / benchmark files, or compare results",
        description=(
            "Sample --n responses per task with vLLM, score each with its family's reward and report "
            "unbiased pass@k and avg@n per suite. Writes OUT/samples.jsonl (one line per sample) and "
            "OUT/results.json. With --compare, build a side-by-side table from saved results.json files."
        ),
        epilog=("examples: peirce eval --model DIR --suite maa-deduction --suite math-sample --out runs/base\n"
                "          peirce eval --model DIR --file MATH-500/test.jsonl --format math500 --out runs/base\n"
                "          peirce eval --compare base=runs/base/results.json merged=runs/merged/results.json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="HF model folder to evaluate")
    p.add_argument("--suite", action="append", default=[], metavar="NAME",
                   help="suite name (repeatable): maa-{deduction,induction,abduction}, maa-reference-{task}, "
                        "{math,code,science}-sample")
    p.add_argument("--file", action="append", default=[], metavar="PATH", help="benchmark file (repeatable)")
    p.add_argument("--format", action="append", default=[], choices=FORMATS,
                   help="format of each --file, in order (one --format applies to every file)")
    p.add_argument("--n", type=int, default=1, help="samples per task (default 1)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--k", type=_int_list, default=(1,), help="pass@k values, e.g. 1,8 (each <= --n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", type=_int_list, default=None, help="MAA levels, e.g. 1,2 (default 1,2,3 / all)")
    p.add_argument("--per-level", type=int, default=50, help="generated MAA puzzles per level (default 50)")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N tasks of each suite")
    p.add_argument("--prompt-style", default="auto", choices=("auto", "reference", "chat_template"))
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"),
                   help="engine dtype (auto: bf16 where native, else fp32; float32: host-independent greedy scores)")
    p.add_argument("--kv-cache-gib", type=float, default=None, help="vLLM KV cache per engine in GiB (may be fractional)")
    p.add_argument("--out", help="output folder (eval: default eval-results/<model name>)")
    p.add_argument("--compare", nargs="+", metavar="NAME=RESULTS.json", help="rows of a side-by-side table")
    p.add_argument("--metric", default="pass@1", help="table metric for --compare (default pass@1)")
    p.set_defaults(handler=run)
    return p


def _fail(message: str) -> int:
    print(f"peirce eval: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    if args.compare:
        if args.model or args.suite or args.file:
            return _fail("--compare builds a table from saved results; do not combine it with --model/--suite/--file")
        return _compare(args)
    return _evaluate(args)


def _compare(args: argparse.Namespace) -> int:
    from peirce.eval.report import build_table
    from peirce.eval.runner import EvalConfigError, load_result

    rows = []
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            return _fail(f"--compare {item!r}: expected NAME=PATH/results.json")
        try:
            rows.append((name, load_result(path)))
        except EvalConfigError as exc:
            return _fail(f"--compare {name}: {exc}")
    try:
        table = build_table(rows, args.metric)
    except ValueError as exc:
        return _fail(f"--compare: {exc}")
    if all(v is None for r in table.rows for v in r.cells.values()):
        return _fail(f"--metric {args.metric!r}: no result has it (e.g. pass@1, avg@N with N = --n of the run)")
    markdown = table.to_markdown()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(markdown)
        (out / "table.json").write_text(json.dumps(table.to_json(), indent=2) + "\n")
        print(f"wrote {out / 'table.md'} and {out / 'table.json'}", file=sys.stderr)
    print(markdown, end="")
    return 0


def _suites(args: argparse.Namespace, options) -> list:
    """Resolve every --suite and --file before anything slow starts; SuiteError/ValueError on bad input."""
    from peirce.eval.suites import Suite, SuiteError, file_suite_name, load_suite

    if args.format and len(args.format) not in (1, len(args.file)):
        raise SuiteError(f"--format given {len(args.format)} times for {len(args.file)} --file: give one per file "
                         "or one for all")
    if args.file and not args.format:
        raise SuiteError("--file needs --format (one of: math500 aime amc gpqa mbpp livecodebench)")
    suites = [load_suite(name, options) for name in dict.fromkeys(args.suite)]
    taken = {s.name for s in suites}
    for i, path in enumerate(args.file):
        fmt = args.format[0] if len(args.format) == 1 else args.format[i]
        if not Path(path).is_file():
            raise SuiteError(f"--file {path!r}: no such file")
        name = file_suite_name(fmt, path, taken)
        taken.add(name)
        s = load_suite(f"file:{fmt}:{path}", options)
        suites.append(Suite(name, s.tasks))
    if not suites:
        raise SuiteError("nothing to evaluate: give --suite NAME and/or --file PATH --format F")
    return suites


def _evaluate(args: argparse.Namespace) -> int:
    from peirce.eval.loaders import BenchmarkFileError
    from peirce.eval.runner import EvalConfigError, EvalSettings
    from peirce.eval.suites import SuiteError, SuiteOptions
    from peirce.tasks.domain import DomainDataError

    if not args.model:
        return _fail("--model DIR is required (or use --compare NAME=results.json ...)")
    model = Path(args.model)
    if not (model / "config.json").is_file():
        return _fail(f"--model {args.model!r}: not a model folder (no config.json)")
    try:
        EvalSettings(n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                     k_values=tuple(args.k), seed=args.seed, prompt_style=args.prompt_style)
        options = SuiteOptions(levels=args.levels, per_level=args.per_level, seed=args.seed, limit=args.limit,
                               file_seed=args.seed)
        suites = _suites(args, options)
    except (EvalConfigError, SuiteError, BenchmarkFileError, DomainDataError) as exc:
        return _fail(str(exc))

    from peirce.eval.report import build_table
    from peirce.eval.runner import evaluate

    out = Path(args.out) if args.out else Path("eval-results") / model.resolve().name
    engine_kwargs = {"dtype": args.dtype, **({"kv_cache_gib": args.kv_cache_gib} if args.kv_cache_gib else {})}
    try:
        result = evaluate(model, suites, n=args.n, temperature=args.temperature, top_p=args.top_p,
                          max_tokens=args.max_tokens, k_values=args.k, seed=args.seed, out_dir=out,
                          prompt_style=args.prompt_style, engine_kwargs=engine_kwargs)
    except EvalConfigError as exc:
        return _fail(str(exc))
    for name, s in result.suites.items():
        print(json.dumps({"suite": name, "tasks": s.tasks, "samples": s.samples, **s.metrics,
                          "format_rate": round(s.format_rate, 4), "reward_errors": s.reward_errors}))
    print(build_table([(model.name, result)]).to_markdown(), end="", file=sys.stderr)
    print(f"wrote {out / 'samples.jsonl'} and {out / 'results.json'}", file=sys.stderr)
    return 0
