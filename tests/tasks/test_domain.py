"""Domain families: registry, prompts, loaders for each layout, shipped samples scored by gold."""

from __future__ import annotations

import json
import random

import pytest

from peirce.rewards.registry import get_reward
from peirce.tasks.base import family_names, get_family
from peirce.tasks.dataset import read_tasks
from peirce.tasks.domain import (
    DOMAIN_FAMILIES,
    DomainDataError,
    NotGenerativeError,
    load_domain_file,
    load_samples,
    sample_path,
    write_domain_jsonl,
)
from peirce.tasks.prompts import PromptError

SIZES = {"math": (32, 8), "code": (16, 4), "science": (16, 4)}


def test_families_are_registered_and_not_generative():
    assert set(DOMAIN_FAMILIES) <= set(family_names())
    fam = get_family("math")
    with pytest.raises(NotGenerativeError, match="math_train.jsonl"):
        fam.generate_one(1, random.Random(0))
    with pytest.raises(NotGenerativeError):
        fam.solve("What is 2+3?")


@pytest.mark.parametrize("family", DOMAIN_FAMILIES)
def test_shipped_samples_load_and_gold_scores_one(family):
    """Every shipped item: the family's reward gives its gold response 1.0."""
    reward = get_reward(family)
    for split, n in zip(("train", "test"), SIZES[family]):
        tasks = load_samples(family, split)
        assert len(tasks) == n and {t.split for t in tasks} == {split} and {t.family for t in tasks} == {family}
        assert len({t.id for t in tasks}) == n
        for t in tasks:
            r = reward(t, t.solution_text)
            assert (r.reward, r.correct) == (1.0, True), t.id


def test_samples_train_test_disjoint_and_readable_by_read_tasks():
    for family in DOMAIN_FAMILIES:
        train, test = load_samples(family, "train"), load_samples(family, "test")
        assert not {t.puzzle_text for t in train} & {t.puzzle_text for t in test}
        assert read_tasks(sample_path(family, "train")) == train


def test_samples_are_verl_rows():
    row = json.loads(sample_path("science", "test").read_text().splitlines()[0])
    assert row["data_source"] == "peirce/science" and row["ability"] == "science"
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["reward_model"]["ground_truth"] in "ABCD" and row["extra_info"]["split"] == "test"


def test_code_sample_reference_fails_wrong_tests():
    t = load_samples("code", "test")[0]
    wrong = t.solution_text.replace("return", "return None and", 1)
    assert get_reward("code")(t, wrong).reward < 1.0


def test_math_prompt_reference_and_chat_template(embedded_model_dir):
    from transformers import AutoTokenizer

    task = load_samples("math")[0]
    ref = get_family("math").render(task, "reference")
    assert ref.prefill == "" and ref.text.endswith("<|im_start|>assistant\n")
    assert f"{task.puzzle_text}\nPlease reason step by step, and put your final answer within \\boxed{{}}." in ref.text
    tok = AutoTokenizer.from_pretrained(embedded_model_dir)
    chat = get_family("math").render(task, "chat_template", tok)
    assert task.puzzle_text in chat.text and "\\boxed{}" in chat.text and chat.prefill == ""
    with pytest.raises(PromptError, match="style="):
        get_family("math").render(task, "fancy")


def test_code_and_science_prompts_carry_instructions():
    code = load_samples("code")[0]
    text = get_family("code").render(code, "reference").text
    assert "```python" in text and code.puzzle["tests"][0] in text and code.puzzle["tests"][2] not in text
    sci = load_samples("science")[0]
    text = get_family("science").render(sci, "reference").text
    assert "\nA. " in text and "\nD. " in text and "\\boxed{}" in text


def test_verl_row_without_task_fields(tmp_path):
    """SimpleRL-Zoo-like rows: messages prompt, ground truth, question in extra_info."""
    rows = [
        {"data_source": "simplelr_math", "ability": "math",
         "prompt": [{"role": "user", "content": "What is 1+1?\nPlease reason step by step..."}],
         "reward_model": {"style": "rule", "ground_truth": "2"},
         "extra_info": {"index": 7, "split": "train", "question": "What is 1+1?"}},
        {"data_source": "simplelr_math", "ability": "math",
         "prompt": [{"role": "user", "content": "Pre-rendered: what is 3+3? Box it."}],
         "reward_model": {"style": "rule", "ground_truth": "6"}, "extra_info": {"index": 8}},
    ]
    path = tmp_path / "math_train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    a, b = load_domain_file(path)
    assert (a.family, a.id, a.puzzle_text, a.puzzle["answer"], a.split) == ("math", "math-train-000007", "What is 1+1?", "2", "train")
    assert get_reward("math")(a, "\\boxed{2}").reward == 1.0
    rendered = get_family("math").render(b, "reference").text  # verbatim messages, no second instruction
    assert "Pre-rendered: what is 3+3? Box it.<|im_end|>" in rendered and "Please reason" not in rendered


def test_simple_formats_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    mbpp = {"task_id": 1, "text": "Write double(x).", "code": "def double(x):\n    return 2 * x",
            "test_list": ["assert double(2) == 4", "assert double(0) == 0"], "test_setup_code": ""}
    humaneval = {"task_id": "HumanEval/0", "prompt": "def inc(x):\n    \"\"\"x + 1\"\"\"\n",
                 "canonical_solution": "    return x + 1\n", "entry_point": "inc",
                 "test": "def check(candidate):\n    assert candidate(1) == 2\n"}
    pq.write_table(pa.Table.from_pylist([mbpp]), tmp_path / "mbpp_test.parquet")
    (tmp_path / "he.jsonl").write_text(json.dumps(humaneval))
    (tmp_path / "sci.jsonl").write_text(json.dumps({"question": "Q?", "choices": ["a", "b", "c"], "answer": 2}))
    (tmp_path / "m.jsonl").write_text(json.dumps({"problem": "1/2 + 1/2?", "answer": "1"}))
    (m,) = load_domain_file(tmp_path / "mbpp_test.parquet")
    assert m.family == "code" and m.split == "test" and m.puzzle["entry_point"] == "double"
    (h,) = load_domain_file(tmp_path / "he.jsonl")
    (s,) = load_domain_file(tmp_path / "sci.jsonl")
    (q,) = load_domain_file(tmp_path / "m.jsonl")
    assert s.puzzle["answer"] == "C" and q.family == "math"
    for t in (m, h, s, q):
        assert get_reward(t.family)(t, t.solution_text).reward == 1.0, t.family


def test_round_trip_through_writer(tmp_path):
    tasks = load_samples("code", "test")
    path = write_domain_jsonl(tasks, tmp_path / "out" / "code.jsonl")
    assert load_domain_file(path) == tasks


def test_bad_rows_name_file_row_and_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"ability": "math", "prompt": [{"role": "user", "content": "Q"}],
                                "reward_model": {"ground_truth": ""}}) + "\n")
    with pytest.raises(DomainDataError, match=r"x.jsonl: row 0: .*answer"):
        load_domain_file(path)
    path.write_text(json.dumps({"foo": 1}))
    with pytest.raises(DomainDataError, match="cannot tell the family"):
        load_domain_file(path)
    path.write_text("{not json")
    with pytest.raises(DomainDataError, match=r"x.jsonl:1: not JSON"):
        load_domain_file(path)
    with pytest.raises(DomainDataError, match="not a domain family"):
        load_domain_file(sample_path("math"), family="deduction")
    with pytest.raises(DomainDataError, match=r"\.csv"):
        load_domain_file(tmp_path / "x.csv")


def test_math_answers_match_by_equivalence():
    fam = get_family("math")
    assert fam.answers_match("\\boxed{0.5}", "\\boxed{\\frac{1}{2}}") is True
    assert fam.answers_match("\\boxed{2}", "\\boxed{3}") is False
    assert get_family("science").parse_answer("Answer: B") == "B"
