"""The typed task object and the task-family registry.

Every puzzle family (deduction, induction, abduction, and later math/code/science)
implements `TaskFamily`; code elsewhere looks families up by name with
`get_family(name)` so nothing dispatches on string prefixes.
"""

from __future__ import annotations

import abc
import random
from typing import Any, ClassVar

import msgspec

from peirce.registry import Registry, UnknownNameError, import_modules


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """One puzzle. Serialises to msgpack (`encode_task`) and to the verl parquet layout."""

    id: str  # stable, unique within (family, split); e.g. "deduction-L2-train-000042"
    # The family name (deduction, math, ...). Serialised as "task": the key of every data
    # file and checkpoint written so far, and of the verl parquet layout.
    family: str = msgspec.field(name="task")
    level: int  # 1..5
    split: str  # "train" | "val" | "test"
    puzzle: dict[str, Any]  # structured data (formulas, sequence, premises, ...)
    puzzle_text: str  # the user-turn text, reference format
    solution_text: str  # gold answer text, reference format
    seed: int = 0  # generator seed that produced it (provenance)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Task)


def encode_task(task: Task) -> bytes:
    return _ENCODER.encode(task)


def decode_task(data: bytes) -> Task:
    """Decode and validate; raises `msgspec.ValidationError` naming the bad field."""
    return _DECODER.decode(data)


class UnknownTaskError(UnknownNameError):
    """A task family name that is not registered."""


class NoWorkedSolutionError(NotImplementedError):
    """The family has no program-written worked solutions (only the MAA logic families do)."""


class TaskFamily(abc.ABC):
    """A program-generated, program-verified task family."""

    name: ClassVar[str]
    levels: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5)
    worked_variants: ClassVar[int] = 0  # phrasings `worked_solution(variant=...)` accepts

    @abc.abstractmethod
    def generate_one(self, level: int, rng: random.Random) -> tuple[dict[str, Any], str, str] | None:
        """Draw one candidate puzzle: (puzzle data, puzzle_text, solution_text), or None
        when the candidate is rejected (not unique, ambiguous, ...). Must only use `rng`."""

    @abc.abstractmethod
    def solve(self, puzzle_text: str) -> str:
        """Solve from the reference-format text alone; return the answer text in the
        reference format. Raises ValueError with a specific message on unparseable text."""

    def render(self, task: Task, style: str, tokenizer: Any = None) -> Any:
        """The prompt for `task` (a `peirce.tasks.prompts.RenderedPrompt`). Families
        without their own wording use the MAA reference/chat-template renderers."""
        from peirce.tasks.prompts import render_prompt

        return render_prompt(task, style=style, tokenizer=tokenizer)

    def worked_solution(self, puzzle_text: str, variant: int | None = None,
                        rng: random.Random | None = None) -> str:
        """The completion a model should write after the pre-filled `<think>`: a short
        reasoning trace, `</think>`, then `<answer>...</answer>` in the gold format, so
        `THINK_PREFILL + worked_solution(text)` earns the full MAA reward. For a supervised
        warm start: a small model that never samples the answer format gives RL no signal.

        Works from `puzzle_text` alone. `variant` in `range(worked_variants)` fixes one
        phrasing for every step; `rng` draws each step's phrasing; neither means variant 0.
        Raises ValueError on unparseable or unsolvable text, `NoWorkedSolutionError` for
        families without worked solutions."""
        raise NoWorkedSolutionError(
            f"task family {self.name!r} has no worked solutions; families with them: deduction, induction, abduction"
        )

    @abc.abstractmethod
    def parse_answer(self, answer: str) -> Any | None:
        """Normalise an answer block (model output or gold) to a comparable value; None when
        it cannot be parsed. Must never raise and must take bounded time on any input."""

    def answers_match(self, predicted: str, gold: str) -> bool | None:
        """True/False when `predicted` parses; None when it does not parse."""
        p = self.parse_answer(predicted)
        if p is None:
            return None
        return p == self.parse_answer(gold)


# The built-in families register themselves on import, on the first miss; missing
# modules are skipped (families not written yet).
FAMILIES: Registry[type[TaskFamily]] = Registry(
    "task family",
    loader=import_modules(*(f"peirce.tasks.{m}" for m in ("deduction", "induction", "abduction", "toy", "domain"))),
    error=UnknownTaskError,
)
family_names = FAMILIES.names


def register_family(cls: type[TaskFamily]) -> type[TaskFamily]:
    """Class decorator: make a family available to `get_family(cls.name)`."""
    return FAMILIES.register(cls.name)(cls)


def get_family(name: str) -> TaskFamily:
    """A fresh instance of the family registered as `name`."""
    return FAMILIES.get(name)()
