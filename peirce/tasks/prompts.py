"""Prompt renderers: the reference MAA text, or a model's own chat template.

Why two: the released MAA data ships prompts pre-rendered in Qwen2.5 chat syntax, and
reproducing them byte-for-byte is what proves compatibility with that work; but any
other model (SmolLM2 here) must see its own chat template or it reads foreign special
tokens as plain text. Both styles pre-fill the assistant turn with `<think>`, and
`RenderedPrompt.prefill` says so, so a reward can rebuild the whole assistant turn as
`prefill + completion` (the format check counts that `<think>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from peirce.tasks.base import Task

THINK_PREFILL = "<think>"

SYSTEM_TEXT = (
    "You are a helpful assistant. The assistant first thinks about the reasoning process in "
    "the mind and then provides the user with the final answer. The reasoning process and "
    "answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, "
    "i.e. <think> reasoning process </think><answer> final answer </answer>."
)

# The task line of each reference prompt, verbatim from the released parquet files
# (including their typos: "squence"; deduction's example says "true" while gold says "True").
TASK_INSTRUCTIONS: dict[str, str] = {
    "deduction": (
        "Now the user has a logical formula problem. After thorough thinking, once you reach a "
        "conclusion, please list the truth value of each variable within <answer>...</answer> "
        "to satisfy the formulas, for example:\n<answer>\n(1) A is true\n(2) B is false\n"
        "...</answer>."
    ),
    "induction": (
        "Now the user has a numerical pattern recognition question. After thorough thinking, "
        "once you reach a conclusion, please give the value at the question mark within "
        "<answer>...</answer> to meet the pattern of squence, for example:\n<answer>10</answer>."
    ),
    "abduction": (
        "Now the user has a graph analysis problem. After thorough thinking, once you reach a "
        "conclusion, please list the reachable judgement of each goal within "
        "<answer>...</answer> to satisfy the formulas, for example:\n<answer>\n"
        "(1) A is reachable\n(2) B is unreachable\n...</answer>."
    ),
}


@dataclass(frozen=True)
class RenderedPrompt:
    """`text` is what the engine is given; it already ends with `prefill`."""

    text: str
    prefill: str


class PromptError(ValueError):
    pass


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """The token ids of a rendered prompt: the one way rollout, evaluation, SFT and MASA's
    expert SFT tokenise it, so all four train and score on the same ids. The tokenizer adds
    its special tokens (a BOS, for tokenizers that add one) unless the text already starts
    with the BOS token (a chat template that writes it itself): never none, never two."""
    bos = getattr(tokenizer, "bos_token", None)
    add = not (bos and text.startswith(bos))
    return [int(t) for t in tokenizer(text, add_special_tokens=add)["input_ids"]]


def system_message(family: str) -> str:
    """System text plus the task's instruction line, as the reference system turn holds them."""
    try:
        instruction = TASK_INSTRUCTIONS[family]
    except KeyError:
        raise PromptError(
            f"task={family!r} has no prompt instruction; known: {', '.join(sorted(TASK_INSTRUCTIONS))}"
        ) from None
    return f"{SYSTEM_TEXT}\n{instruction}\n"


def chat_messages(family: str, puzzle_text: str) -> list[dict[str, str]]:
    """The conversation as role/content messages (for engines that apply templates themselves)."""
    return [
        {"role": "system", "content": system_message(family)},
        {"role": "user", "content": puzzle_text},
    ]


def _render_reference(family: str, puzzle_text: str, tokenizer: Any) -> RenderedPrompt:
    text = (
        f"<|im_start|>system\n{system_message(family)}<|im_end|>\n"
        f"<|im_start|>user\n{puzzle_text}\n<|im_end|>\n"
        f"<|im_start|>assistant\n{THINK_PREFILL}"
    )
    return RenderedPrompt(text=text, prefill=THINK_PREFILL)


def _render_chat_template(family: str, puzzle_text: str, tokenizer: Any) -> RenderedPrompt:
    if tokenizer is None:
        raise PromptError("style='chat_template' needs tokenizer=<a transformers tokenizer>, got None")
    if not getattr(tokenizer, "chat_template", None):
        raise PromptError(f"tokenizer {type(tokenizer).__name__} has no chat_template; use style='reference'")
    head = tokenizer.apply_chat_template(
        chat_messages(family, puzzle_text), tokenize=False, add_generation_prompt=True
    )
    return RenderedPrompt(text=head + THINK_PREFILL, prefill=THINK_PREFILL)


_RENDERERS: dict[str, Callable[[str, str, Any], RenderedPrompt]] = {
    "reference": _render_reference,
    "chat_template": _render_chat_template,
}

PROMPT_STYLES: tuple[str, ...] = tuple(_RENDERERS)


def render_prompt(
    task: Task | str, puzzle_text: str | None = None, style: str = "reference", tokenizer: Any = None
) -> RenderedPrompt:
    """Render the prompt for one puzzle.

    `task` is a `Task` (its `puzzle_text` is used when `puzzle_text` is None) or a task name.
    `style`: "reference" (Qwen2.5 text exactly as in the released MAA parquet files) or
    "chat_template" (the tokenizer's template with system + user messages, `<think>` pre-filled).
    """
    if isinstance(task, Task):
        family = task.family
        puzzle_text = task.puzzle_text if puzzle_text is None else puzzle_text
    else:
        family = task
    if puzzle_text is None:
        raise PromptError("puzzle_text is required when task is given by name")
    try:
        renderer = _RENDERERS[style]
    except KeyError:
        raise PromptError(f"style={style!r} is not a prompt style; valid: {', '.join(PROMPT_STYLES)}") from None
    return renderer(family, puzzle_text, tokenizer)
