"""The texts MASA adds: the meta prompt (user turn of a meta rollout) and the notion hint.

Placeholders are substituted in one pass over the *template* only, so braces elsewhere in
the template (the JSON example) stay literal and a `{k}` inside the problem text is never
substituted. The driver wraps the text in its chat template (the released code uses the
system turn "You are a helpful assistant.").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from typing import Any

from peirce.masa.config import HintConfig, MetaConfig
from peirce.masa.types import MetaPrediction
from peirce.tasks.prompts import PromptError, RenderedPrompt

META_SYSTEM_TEXT = "You are a helpful assistant."  # the released code's system turn

_PLACEHOLDER = re.compile(r"\{(problem|k|notions)\}")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace `{name}` for the names in `values`; any other brace text is kept as written."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def meta_prompt(problem: str, cfg: MetaConfig) -> str:
    """The user turn of a meta rollout for `problem` (a math problem or an MAA puzzle text)."""
    return fill(cfg.prompt_template, {"problem": problem, "k": str(cfg.k)})


def hint_notions(predictions: Iterable[MetaPrediction], limit: int) -> list[str]:
    """The notions most meta rollouts predicted (each rollout counts a notion once), ties
    in order of first appearance, at most `limit`."""
    counts: Counter[str] = Counter()
    for p in predictions:
        counts.update(dict.fromkeys(p.notions or (), 1))
    return [n for n, _ in counts.most_common(limit)]  # most_common keeps insertion order on ties


def hint(predictions: Sequence[MetaPrediction], cfg: HintConfig) -> str | None:
    """The hint sentence for a prompt's solution rollouts; None when no notion was predicted."""
    notions = hint_notions(predictions, cfg.max_notions)
    return fill(cfg.template, {"notions": ", ".join(notions)}) if notions else None


def with_hint(prompt: str, hint_text: str | None) -> str:
    """The solution prompt's user text with the hint appended as its own paragraph."""
    return prompt if not hint_text else f"{prompt.rstrip()}\n\n{hint_text}"


def render_meta(user_text: str, style: str, tokenizer: Any = None) -> RenderedPrompt:
    """The engine prompt of a meta rollout: `user_text` (meta_prompt's output) as the user
    turn under META_SYSTEM_TEXT, nothing pre-filled (the model opens `<meta>` itself).
    `style` as in peirce.tasks.prompts: "reference" (Qwen2.5 text) or "chat_template"."""
    if style == "reference":
        text = (f"<|im_start|>system\n{META_SYSTEM_TEXT}<|im_end|>\n<|im_start|>user\n{user_text}\n<|im_end|>\n"
                "<|im_start|>assistant\n")
        return RenderedPrompt(text=text, prefill="")
    if style == "chat_template":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise PromptError("style='chat_template' needs a tokenizer with a chat_template for the meta prompt")
        messages = [{"role": "system", "content": META_SYSTEM_TEXT}, {"role": "user", "content": user_text}]
        return RenderedPrompt(text=tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                              prefill="")
    raise PromptError(f"style={style!r} is not a prompt style; valid: reference, chat_template")
