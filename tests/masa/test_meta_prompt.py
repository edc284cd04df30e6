"""The meta prompt and the notion hint."""

import pytest

from peirce.masa.config import HintConfig, MetaConfig
from peirce.masa.prompt import fill, hint, hint_notions, meta_prompt, with_hint
from peirce.masa.types import MetaPrediction


def test_meta_prompt_asks_for_meta_block_and_the_three_keys():
    text = meta_prompt("What is 2 + 2?", MetaConfig(k=8))
    assert "<meta>" in text and "</meta>" in text
    assert '"notions"' in text and '"pass_rate"' in text and '"solution_length"' in text
    assert "from 0 to 8" in text and "of 8 independent attempts" in text
    assert text.endswith("Problem: What is 2 + 2?")
    assert "{k}" not in text and "{problem}" not in text


def test_problem_text_braces_are_never_substituted():
    puzzle = "Formulas: {A ∨ B}, {k}, {problem} must hold."  # an MAA-style puzzle with braces
    text = meta_prompt(puzzle, MetaConfig(k=4))
    assert text.endswith("Problem: " + puzzle)


def test_custom_template_keeps_other_braces_literal():
    cfg = MetaConfig(prompt_template='Rate {problem} out of {k}; answer like {"pass_rate": 3} {unknown}')
    assert meta_prompt("P", cfg) == 'Rate P out of 8; answer like {"pass_rate": 3} {unknown}'
    assert fill("{notions}{k}", {"k": "1"}) == "{notions}1"


def test_hint_ranks_notions_by_how_many_rollouts_named_them():
    preds = [
        MetaPrediction(found=True, notions=("modular arithmetic", "induction", "induction")),
        MetaPrediction(found=True, notions=("parity", "modular arithmetic")),
        MetaPrediction(found=True, notions=None),
        MetaPrediction(found=True, notions=("parity", "pigeonhole")),
    ]
    # duplicates within one rollout count once; ties keep first appearance
    assert hint_notions(preds, 10) == ["modular arithmetic", "parity", "induction", "pigeonhole"]
    assert hint_notions(preds, 2) == ["modular arithmetic", "parity"]
    text = hint(preds, HintConfig(enabled=True, max_notions=2))
    assert text == "The problem could be solved using the following notions: modular arithmetic, parity."
    assert hint([MetaPrediction()], HintConfig(enabled=True)) is None
    assert with_hint("Solve it.\n", text) == "Solve it.\n\n" + text
    assert with_hint("Solve it.", None) == "Solve it."


def test_render_meta_is_its_own_conversation_without_prefill():
    from peirce.masa.prompt import META_SYSTEM_TEXT, render_meta
    from peirce.tasks.prompts import PromptError

    rendered = render_meta("Assess {k} this", "reference")
    assert rendered.prefill == "" and rendered.text.endswith("<|im_start|>assistant\n")
    assert f"system\n{META_SYSTEM_TEXT}<|im_end|>" in rendered.text and "user\nAssess {k} this\n" in rendered.text
    with pytest.raises(PromptError, match="chat_template"):
        render_meta("x", "chat_template", None)
    with pytest.raises(PromptError, match="not a prompt style"):
        render_meta("x", "bogus")
