"""Small benchmark files in each supported format, written per test into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_helpers import GPQA_ROWS, write_csv, write_jsonl


@pytest.fixture
def math500_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "math500.jsonl", [
        {"problem": "What is $3+4$?", "solution": "...", "answer": "7", "subject": "Prealgebra", "level": 1,
         "unique_id": "test/prealgebra/1.json"},
        {"problem": "Simplify $\\frac{2}{4}$.", "solution": "...", "answer": "\\frac{1}{2}", "subject": "Algebra",
         "level": 2, "unique_id": "test/algebra/2.json"},
    ])


@pytest.fixture
def aime_csv(tmp_path: Path) -> Path:  # the AIME 1983-2024 layout
    return write_csv(tmp_path / "AIME_Dataset_1983_2024.csv", [
        {"ID": "1983-1", "Year": "1983", "Problem Number": "1", "Question": "Find $x$ if $2x = 10$.", "Answer": "5",
         "Part": ""},
        {"ID": "1983-2", "Year": "1983", "Problem Number": "2", "Question": "What is $6 \\cdot 7$?", "Answer": "42",
         "Part": ""},
    ])


@pytest.fixture
def amc_jsonl(tmp_path: Path) -> Path:  # AMC 2023 stores integer answers as floats
    return write_jsonl(tmp_path / "amc23.jsonl", [
        {"id": 0, "question": "What is $20+7$?", "answer": 27.0, "url": "x"},
        {"id": 1, "question": "What is $1/4$ as a decimal?", "answer": 0.25, "url": "y"},
    ])




@pytest.fixture
def gpqa_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "gpqa_diamond.csv", GPQA_ROWS)


@pytest.fixture
def mbpp_jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "mbpp.jsonl", [
        {"task_id": 11, "text": "Write a function to add two numbers.", "code": "def add(a, b):\n    return a + b",
         "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"],
         "test_setup_code": "", "challenge_test_list": []},
        {"task_id": 12, "text": "Write a function to square a number.", "code": "def sq(x):\n    return x * x",
         "test_list": ["assert sq(3) == 9", "assert sq(-2) == 4", "assert sq(0) == 0"], "test_setup_code": "",
         "challenge_test_list": []},
    ])


@pytest.fixture
def lcb_jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "livecodebench.jsonl", [
        {"question_id": "abc300_a", "question_title": "Sum", "platform": "atcoder", "difficulty": "easy",
         "question_content": "Given two integers A and B, print A+B.", "starter_code": "",
         "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"},
                                          {"input": "40 2\n", "output": "42\n", "testtype": "stdin"}]),
         "metadata": "{}"},
        {"question_id": "2828", "question_title": "Total", "platform": "leetcode", "difficulty": "easy",
         "question_content": "Return the sum of nums plus k.",
         "starter_code": "class Solution:\n    def total(self, nums: List[int], k: int) -> int:\n        ",
         "public_test_cases": json.dumps([{"input": "[1,2,3]\n1", "output": "7", "testtype": "functional"},
                                          {"input": "[]\n5", "output": "5", "testtype": "functional"}]),
         "metadata": json.dumps({"func_name": "total"})},
    ])
