"""Stage C domain task families (math, code, science): read from data files, not generated.

Why a `DatasetFamily`: these tasks come from curated sets (SimpleRL-Zoo math, MBPP,
GPQA-style questions), so the family supplies the prompt wording, answer parsing and
file loading, while the reward registry ("math", "code", "science", same names) does
the judging. `get_family("math")` works like any family; only `generate_one`/`solve`
raise `NotGenerativeError`, which says where such tasks come from.

Task.puzzle per family:
  math:    problem, answer (LaTeX)
  code:    prompt, tests (assert statements) or test_program + entry_point, entry_point,
           setup (optional), reference_solution (optional)
  science: question, choices (list), answer (letter)
`solution_text` is a gold *response* (`\\boxed{...}` or a ```python block), so every
family's reward scores `task.solution_text` as 1.0.

Files: `load_domain_file` reads jsonl/parquet rows in the verl layout (`prompt`,
`reward_model.ground_truth`, `data_source`, `extra_info`), peirce Task rows, and simple
formats ({problem, answer}; MBPP {text, test_list, code}; HumanEval {prompt, test,
entry_point}; {question, choices, answer}). The shipped sample sets
(peirce/data/domain/) are verl rows that also carry the Task fields, so
`peirce.tasks.dataset.read_tasks` and verl's RLHFDataset read them too.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from peirce.tasks.base import Task, TaskFamily, register_family
from peirce.tasks.prompts import PromptError, RenderedPrompt

DOMAIN_FAMILIES = ("math", "code", "science")
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "domain"
SYSTEM_TEXT = "You are a helpful assistant."
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CODE_INSTRUCTION = "Write the Python function in a single ```python code block."
SCIENCE_INSTRUCTION = "Reason step by step, then put only the letter of the correct option in \\boxed{}, e.g. \\boxed{A}."


class NotGenerativeError(NotImplementedError):
    pass


class DomainDataError(ValueError):
    pass


class DatasetFamily(TaskFamily):
    """A family whose tasks are read from files; subclasses define the user text."""

    levels: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5)

    def generate_one(self, level, rng):
        raise NotGenerativeError(
            f"{self.name!r} tasks are not generated: read them with peirce.tasks.domain.load_domain_file "
            f"or set tasks.data_files (samples: {DATA_DIR}/{self.name}_train.jsonl)"
        )

    def solve(self, puzzle_text: str) -> str:
        raise NotGenerativeError(f"{self.name!r} tasks have no solver; their gold is in Task.solution_text")

    def user_text(self, task: Task) -> str:
        return task.puzzle_text

    def render(self, task: Task, style: str, tokenizer: Any = None) -> RenderedPrompt:
        """"reference": Qwen2.5 chat text (the SimpleRL-Zoo recipe); "chat_template": the
        tokenizer's own template. No pre-fill: domain answers need no `<think>` tag."""
        messages = task.puzzle.get("messages") or [
            {"role": "system", "content": SYSTEM_TEXT},
            {"role": "user", "content": self.user_text(task)},
        ]
        if style == "reference":
            text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
            return RenderedPrompt(text=text + "<|im_start|>assistant\n", prefill="")
        if style == "chat_template":
            if tokenizer is None or not getattr(tokenizer, "chat_template", None):
                raise PromptError(f"style='chat_template' needs a tokenizer with a chat_template, got {tokenizer!r:.80}")
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return RenderedPrompt(text=text, prefill="")
        raise PromptError(f"style={style!r} is not a prompt style for {self.name!r}; valid: reference, chat_template")


@register_family
class MathFamily(DatasetFamily):
    name = "math"

    def user_text(self, task: Task) -> str:
        return f"{task.puzzle_text}\n{MATH_INSTRUCTION}"

    def parse_answer(self, answer: str) -> str | None:
        from peirce.rewards.math import MAX_ANSWER_CHARS, last_boxed

        boxed = last_boxed(answer)
        value = boxed if boxed is not None else (answer.strip() if isinstance(answer, str) else "")
        return value if value and len(value) <= MAX_ANSWER_CHARS else None

    def answers_match(self, predicted: str, gold: str) -> bool | None:
        """Equivalence by math_verify, not string equality."""
        from peirce.rewards.math import answers_equivalent

        p, g = self.parse_answer(predicted), self.parse_answer(gold)
        return None if p is None or g is None else answers_equivalent(p, g)


@register_family
class CodeFamily(DatasetFamily):
    name = "code"

    def user_text(self, task: Task) -> str:
        return f"{task.puzzle_text}\n{CODE_INSTRUCTION}"

    def parse_answer(self, answer: str) -> str | None:
        """The program text (correctness is judged by running tests: the "code" reward)."""
        from peirce.rewards.code import extract_code

        return extract_code(answer)


@register_family
class ScienceFamily(DatasetFamily):
    name = "science"

    def user_text(self, task: Task) -> str:
        return f"{task.puzzle_text}\n\n{SCIENCE_INSTRUCTION}"

    def parse_answer(self, answer: str) -> str | None:
        from peirce.rewards.science import extract_choice

        return extract_choice(answer)


# ---------------------------------------------------------------- building tasks


def math_task(problem: str, answer: str, *, id: str, split: str, level: int = 1, **extra: Any) -> Task:
    return Task(id=id, family="math", level=level, split=split, puzzle={"problem": problem, "answer": answer, **extra},
                puzzle_text=problem, solution_text=f"\\boxed{{{answer}}}")


def code_task(prompt: str, tests: list[str] | None = None, *, id: str, split: str, level: int = 1,
              entry_point: str | None = None, reference_solution: str = "", test_program: str = "",
              setup: str = "", **extra: Any) -> Task:
    entry_point = entry_point or _entry_point(tests or [])
    puzzle: dict[str, Any] = {"prompt": prompt, "entry_point": entry_point, "setup": setup,
                              "reference_solution": reference_solution, **extra}
    if tests:
        puzzle["tests"] = list(tests)
        text = f"{prompt}\nYour code should pass tests like this one:\n{tests[0]}"
    elif test_program:
        puzzle["test_program"] = test_program
        text = prompt
    else:
        raise DomainDataError(f"code task {id!r}: needs tests or test_program")
    solution = f"```python\n{reference_solution.rstrip()}\n```" if reference_solution else ""
    return Task(id=id, family="code", level=level, split=split, puzzle=puzzle, puzzle_text=text, solution_text=solution)


def science_task(question: str, choices: list[str] | None, answer: str, *, id: str, split: str, level: int = 1,
                 **extra: Any) -> Task:
    if choices:
        lines = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(choices))
        text = f"{question}\n\n{lines}"
    else:
        text = question  # the options are already in the question text
    letter = str(answer).strip().upper()
    return Task(id=id, family="science", level=level, split=split,
                puzzle={"question": question, "choices": list(choices or []), "answer": letter, **extra},
                puzzle_text=text, solution_text=f"\\boxed{{{letter}}}")


def _entry_point(tests: list[str]) -> str | None:
    m = re.search(r"assert\s+(?:not\s+)?\(?\s*(?:math\.isclose\()?\s*([A-Za-z_]\w*)\s*\(", tests[0]) if tests else None
    return m.group(1) if m else None


# ---------------------------------------------------------------- verl rows


def to_verl_row(task: Task, index: int) -> dict[str, Any]:
    """verl RLHFDataset row (messages prompt, rule reward) plus the Task fields."""
    family = _family(task.family)
    truth: Any = {"math": lambda p: p["answer"], "science": lambda p: p["answer"],
                  "code": lambda p: json.dumps({k: p[k] for k in ("tests", "test_program", "entry_point", "setup")
                                                if p.get(k)})}[task.family](task.puzzle)
    return {
        "data_source": f"peirce/{task.family}",
        "prompt": [{"role": "system", "content": SYSTEM_TEXT}, {"role": "user", "content": family.user_text(task)}],
        "ability": task.family,
        "reward_model": {"style": "rule", "ground_truth": truth},
        "extra_info": {"index": index, "split": task.split},
        **msgspec.to_builtins(task),
    }


def write_domain_jsonl(tasks: list[Task], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i, t in enumerate(tasks):
            fh.write(json.dumps(to_verl_row(t, i), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _family(name: str) -> DatasetFamily:
    cls = {"math": MathFamily, "code": CodeFamily, "science": ScienceFamily}.get(name)
    if cls is None:
        raise DomainDataError(f"task={name!r} is not a domain family; valid: {', '.join(DOMAIN_FAMILIES)}")
    return cls()


_FAMILY_HINTS = (("code", ("code", "mbpp", "humaneval", "livecodebench", "apps")),
                 ("science", ("science", "gpqa", "mmlu", "arc", "sciq", "multiple_choice")),
                 ("math", ("math", "gsm", "aime", "amc", "olympiad", "simplelr", "deepscaler", "numina")))


def infer_family(row: dict[str, Any]) -> str | None:
    if row.get("task") in DOMAIN_FAMILIES:
        return row["task"]
    hay = f"{row.get('ability', '')} {row.get('data_source', '')}".lower()
    for name, words in _FAMILY_HINTS:
        if any(w in hay for w in words):
            return name
    if "test_list" in row or "entry_point" in row:
        return "code"
    if "choices" in row:
        return "science"
    if "problem" in row or ("answer" in row and "question" in row):
        return "math"
    return None


def row_to_task(row: dict[str, Any], index: int, family: str | None = None, split: str = "train") -> Task:
    """One row of any supported layout as a Task; DomainDataError names the missing field."""
    if {"id", "task", "puzzle", "puzzle_text", "solution_text"} <= row.keys():
        data = {k: row[k] for k in ("id", "task", "level", "split", "puzzle", "puzzle_text", "solution_text", "seed")
                if k in row}
        if isinstance(data["puzzle"], str):
            data["puzzle"] = json.loads(data["puzzle"])
        data.setdefault("split", split)
        task = msgspec.convert(data, Task)
        if family is not None and task.family != family:
            raise DomainDataError(f"row {index}: task={task.family!r} but family={family!r} was asked for")
        return task
    name = family or infer_family(row)
    if name is None:
        raise DomainDataError(f"row {index}: cannot tell the family (no task/ability/data_source hint); pass family=")
    extra = row.get("extra_info") or {}
    split = str(extra.get("split") or row.get("split") or split)
    tid = str(row.get("id") or f"{name}-{split}-{int(extra.get('index', index)):06d}")
    truth = (row.get("reward_model") or {}).get("ground_truth")
    return _BUILDERS[name](row, extra, truth, tid, split)


def _user_content(row: dict[str, Any]) -> str | None:
    msgs = row.get("prompt")
    if isinstance(msgs, list):
        users = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else None
    return msgs if isinstance(msgs, str) else None


def _first(tid: str, what: str, *values: Any) -> Any:
    for v in values:
        if v not in (None, "", []):
            return v
    raise DomainDataError(f"row {tid!r}: no {what}")


def _math_row(row, extra, truth, tid, split) -> Task:
    problem = extra.get("question") or extra.get("problem") or row.get("problem") or row.get("question")
    messages = None
    if not problem:  # only a pre-rendered prompt: keep its messages verbatim
        problem = _first(tid, "problem (extra_info.question, problem, question or prompt)", _user_content(row))
        messages = [dict(m) for m in row["prompt"]] if isinstance(row.get("prompt"), list) else None
    if isinstance(truth, dict):
        truth = truth.get("answer") or truth.get("solution")
    answer = str(_first(tid, "answer (reward_model.ground_truth or answer)", truth, row.get("answer"), extra.get("answer")))
    extra_fields = {"messages": messages} if messages else {}
    return math_task(str(problem), answer, id=tid, split=split, **extra_fields)


def _code_row(row, extra, truth, tid, split) -> Task:
    spec = json.loads(truth) if isinstance(truth, str) and truth.strip().startswith("{") else (truth or {})
    if not isinstance(spec, dict):
        spec = {"tests": spec} if isinstance(spec, list) else {}
    tests = spec.get("tests") or spec.get("test_list") or row.get("test_list") or row.get("tests") or extra.get("tests")
    program = spec.get("test_program") or (row.get("test") if isinstance(row.get("test"), str) else "")
    prompt = _first(tid, "prompt (text, prompt or extra_info.question)", extra.get("question"), row.get("text"),
                    row.get("prompt") if isinstance(row.get("prompt"), str) else None, _user_content(row))
    ref = row.get("code") or row.get("reference_solution") or ""
    if not ref and row.get("canonical_solution") and isinstance(row.get("prompt"), str):
        ref = row["prompt"] + row["canonical_solution"]  # HumanEval: prompt holds the signature
    return code_task(str(prompt), list(tests) if tests else None, id=tid, split=split,
                     entry_point=spec.get("entry_point") or row.get("entry_point"), reference_solution=str(ref),
                     test_program=str(program or ""), setup=str(spec.get("setup") or row.get("test_setup_code") or ""))


def _science_row(row, extra, truth, tid, split) -> Task:
    choices = row.get("choices") or extra.get("choices")
    if isinstance(truth, dict):
        choices = choices or truth.get("choices")
        truth = truth.get("answer")
    answer = _first(tid, "answer letter (reward_model.ground_truth or answer)", truth, row.get("answer"))
    question = _first(tid, "question", extra.get("question"), row.get("question"), _user_content(row))
    if isinstance(answer, int) and choices:
        answer = chr(65 + answer)  # index-style gold (e.g. MMLU)
    return science_task(str(question), list(choices) if choices else None, str(answer), id=tid, split=split)


_BUILDERS = {"math": _math_row, "code": _code_row, "science": _science_row}


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DomainDataError(f"{path}:{lineno}: not JSON ({exc})") from None
        return rows
    raise DomainDataError(f"path {str(path)!r} must end in .jsonl or .parquet, got {path.suffix!r}")


def load_domain_file(path: str | os.PathLike, family: str | None = None, split: str | None = None) -> list[Task]:
    """Tasks from a jsonl/parquet file (any supported layout); `family` forces the family,
    `split` is the default when rows do not say (else guessed from the file name)."""
    path = Path(path)
    default_split = split or next((s for s in ("train", "val", "test") if s in path.stem.lower()), "train")
    if family is not None:
        _family(family)
    out = []
    for i, row in enumerate(_read_rows(path)):
        try:
            out.append(row_to_task(row, i, family, default_split))
        except (DomainDataError, msgspec.ValidationError, json.JSONDecodeError, TypeError, ValueError) as exc:
            raise DomainDataError(f"{path}: row {i}: {exc}") from None
    return out


def sample_path(family: str, split: str = "train") -> Path:
    _family(family)
    if split not in ("train", "test"):
        raise DomainDataError(f"split={split!r}: the shipped samples have train and test")
    return DATA_DIR / f"{family}_{split}.jsonl"


def load_samples(family: str, split: str = "train") -> list[Task]:
    """The small sample set shipped with peirce (peirce/data/domain/)."""
    return load_domain_file(sample_path(family, split), family)
