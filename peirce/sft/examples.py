"""Supervised examples from generated puzzles: the prompt exactly as rollout sends it, the
worked solution as the target.

Why "exactly": the warm-up must teach the model to continue the very token sequence RL
samples from. Rollout renders a task with its family's renderer (`TaskFamily.render`,
`<think>` pre-filled) and the engine tokenizes that text with `tokenizer.encode`
(peirce.rollout.engine.RolloutEngine._prompt_ids); the target is what the engine would
then generate: the worked completion's tokens and the EOS token that ends the turn (vLLM
stops on it and keeps it in the response). The loss covers the target only
(`collate_sft` masks the prompt). Pure given the tokenizer.

Targets are tokenized with `split_special_tokens`, so completion text that spells a
control token is learned as text and never as an end of turn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from peirce.learner.batch import SFTExample
from peirce.tasks.base import Task, get_family
from peirce.tasks.dataset import PuzzleSpaceExhausted, generate_dataset, worked_completion

log = logging.getLogger(__name__)


class SFTDataError(ValueError):
    """Examples cannot be built; the message names the task or setting."""


@dataclass(frozen=True)
class ExampleSet:
    examples: list[SFTExample]
    task_ids: list[str]  # one per example, same order
    dropped: list[tuple[str, int]] = field(default_factory=list)  # (task id, tokens) over max_seq_len

    @property
    def tokens(self) -> int:
        return sum(len(e.prompt_token_ids) + len(e.response_token_ids) for e in self.examples)

    @property
    def target_tokens(self) -> int:
        return sum(len(e.response_token_ids) for e in self.examples)


def prompt_token_ids(task: Task, prompt_style: str, tokenizer: Any) -> list[int]:
    """The prompt ids rollout gives the engine for `task` (render, then `encode_prompt`)."""
    from peirce.tasks.prompts import encode_prompt

    return encode_prompt(tokenizer, get_family(task.family).render(task, prompt_style, tokenizer).text)


def target_token_ids(completion: str, tokenizer: Any) -> list[int]:
    """The completion's tokens plus EOS (the model must learn to stop after `</answer>`)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise SFTDataError(f"tokenizer {type(tokenizer).__name__} has no eos_token_id: a target could not end")
    # split_special_tokens: text that spells a control token ("<|im_end|>") stays text; the
    # only control token in a target is the EOS appended here.
    ids = [int(t) for t in tokenizer(completion, add_special_tokens=False, split_special_tokens=True)["input_ids"]]
    return [*ids, int(eos)]


def build_sft_examples(tasks: Sequence[Task], tokenizer: Any, prompt_style: str, *, max_seq_len: int | None = None,
                       completion: Callable[[Task], str] = worked_completion) -> ExampleSet:
    """One example per task, in order; tasks longer than `max_seq_len` tokens are dropped and listed."""
    examples, ids, dropped = [], [], []
    for task in tasks:
        prompt = prompt_token_ids(task, prompt_style, tokenizer)
        target = target_token_ids(completion(task), tokenizer)
        total = len(prompt) + len(target)
        if max_seq_len is not None and total > max_seq_len:
            dropped.append((task.id, total))
            continue
        examples.append(SFTExample(prompt_token_ids=prompt, response_token_ids=target))
        ids.append(task.id)
    if not examples:
        raise SFTDataError(f"no example fits max_seq_len={max_seq_len} (of {len(tasks)} tasks; the shortest has "
                           f"{min((n for _, n in dropped), default=0)} tokens)")
    return ExampleSet(examples=examples, task_ids=ids, dropped=dropped)


def split_evenly(total: int, parts: int) -> list[int]:
    """`total` as `parts` counts differing by at most one, the larger ones first."""
    if parts < 1 or total < 0:
        raise SFTDataError(f"cannot split {total} examples over {parts} levels")
    return [total // parts + (i < total % parts) for i in range(parts)]


def train_tasks(families: Sequence[str], levels: Sequence[int], examples: int, seed: int) -> list[Task]:
    """`examples` train-split puzzles per family, spread over `levels`; a level whose train
    split holds fewer gives all it has (induction L1 has ~344), with a log line."""
    out: list[Task] = []
    for family in families:
        for level, n in zip(levels, split_evenly(examples, len(levels))):
            if n == 0:
                continue
            try:
                out += generate_dataset(family, level, n, split="train", seed=seed, patience=5000)
            except PuzzleSpaceExhausted as exc:
                if exc.found == 0:
                    raise SFTDataError(f"{family} L{level}: the train split has no puzzles") from None
                log.info("%s L%d: only %d train puzzles exist (asked for %d); using all of them",
                         family, level, exc.found, n)
                out += generate_dataset(family, level, exc.found, split="train", seed=seed, patience=5000)
    return out
