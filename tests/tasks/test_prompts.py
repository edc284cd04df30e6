"""Prompt renderers: byte-for-byte against the released reference prompts; chat template."""

from __future__ import annotations

import glob
import os

import pyarrow.parquet as pq
import pytest

from peirce.eval.suites import reference_dir
from peirce.tasks.base import Task
from peirce.tasks.prompts import (
    PROMPT_STYLES,
    TASK_INSTRUCTIONS,
    THINK_PREFILL,
    SYSTEM_TEXT,
    PromptError,
    render_prompt,
)

REF_DIR = str(reference_dir())
REF_FILES = sorted(glob.glob(f"{REF_DIR}/*/*.parquet"))
needs_ref = pytest.mark.skipif(not REF_FILES, reason="reference data not present")


@needs_ref
@pytest.mark.parametrize("path", REF_FILES, ids=lambda p: os.path.relpath(p, REF_DIR))
def test_reference_style_reproduces_every_reference_prompt(path):
    task_name = os.path.basename(os.path.dirname(path))
    table = pq.read_table(path, columns=["puzzle_text", "prompt"])
    for i, (text, prompt) in enumerate(zip(table["puzzle_text"].to_pylist(), table["prompt"].to_pylist())):
        assert len(prompt) == 1 and prompt[0]["role"] == "user"
        rendered = render_prompt(task_name, text, style="reference")
        assert rendered.text == prompt[0]["content"], f"{path} row {i}"
        assert rendered.text.endswith(rendered.prefill)


def test_instructions_differ_per_task():
    assert set(TASK_INSTRUCTIONS) == {"deduction", "induction", "abduction"}
    assert len(set(TASK_INSTRUCTIONS.values())) == 3


def test_task_object_and_explicit_text():
    t = Task(id="x", family="induction", level=1, split="test", puzzle={}, puzzle_text="P?", solution_text="1")
    assert render_prompt(t).text == render_prompt("induction", "P?").text
    assert "OTHER" in render_prompt(t, "OTHER").text


def test_errors_name_the_bad_value():
    with pytest.raises(PromptError, match="'nope'"):
        render_prompt("nope", "x")
    with pytest.raises(PromptError, match="style='fancy'"):
        render_prompt("induction", "x", style="fancy")
    with pytest.raises(PromptError, match="tokenizer"):
        render_prompt("induction", "x", style="chat_template")
    with pytest.raises(PromptError, match="puzzle_text"):
        render_prompt("induction")
    assert PROMPT_STYLES == ("reference", "chat_template")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from peirce.model.tiny import build_tiny_llama

    return AutoTokenizer.from_pretrained(build_tiny_llama())


def test_chat_template_style_uses_the_tokenizer_template(tokenizer):
    puzzle = "Given the following sequence,\n['1', '2', '?']\nWhat is the value at the question mark?"
    rendered = render_prompt("induction", puzzle, style="chat_template", tokenizer=tokenizer)
    assert rendered.prefill == THINK_PREFILL
    assert rendered.text.endswith(THINK_PREFILL)
    head = rendered.text[: -len(THINK_PREFILL)]
    messages = [
        {"role": "system", "content": f"{SYSTEM_TEXT}\n{TASK_INSTRUCTIONS['induction']}\n"},
        {"role": "user", "content": puzzle},
    ]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert head == expected
    assert "<|im_start|>assistant\n" in head  # SmolLM2 uses ChatML tokens as real special tokens
    # The special tokens tokenize as single ids, not as text pieces.
    ids = tokenizer(rendered.text, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") in ids


@pytest.fixture(scope="module")
def bos_tokenizer():
    """A real fast tokenizer whose post-processor prepends <s> (as Llama/Mistral ones do)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate("hello world think answer".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_encode_prompt_adds_the_bos_exactly_once(bos_tokenizer, tokenizer):
    from peirce.tasks.prompts import encode_prompt

    assert encode_prompt(bos_tokenizer, "hello world") == [0, 3, 4]
    assert encode_prompt(bos_tokenizer, "<s> hello world") == [0, 3, 4]  # a template that writes it itself
    text = render_prompt("induction", "['1', '2', '?']", style="chat_template", tokenizer=tokenizer).text
    assert encode_prompt(tokenizer, text) == tokenizer(text, add_special_tokens=False)["input_ids"]  # SmolLM2: no BOS


def test_rollout_evaluation_and_sft_tokenise_a_prompt_alike(bos_tokenizer, tokenizer):
    """The ids SFT trains on and evaluation scores are the ids rollout sends the engine
    (evaluation once dropped the BOS that rollout's `tokenizer.encode` added)."""
    from peirce.eval.runner import _render
    from peirce.sft.examples import prompt_token_ids
    from peirce.tasks.base import get_family
    from peirce.tasks.prompts import encode_prompt

    from peirce.tasks.dataset import generate_dataset

    task = generate_dataset("induction", 1, 1, "test", seed=0)[0]
    for tok, style in ((bos_tokenizer, "reference"), (tokenizer, "chat_template"), (tokenizer, "reference")):
        rendered = get_family(task.family).render(task, style, tok)
        expected = encode_prompt(tok, rendered.text)
        assert _render(task, style, tok)[0] == expected
        assert prompt_token_ids(task, style, tok) == expected
