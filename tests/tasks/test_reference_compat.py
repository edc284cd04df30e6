"""Compatibility with the released MAA test sets: import, score, and write back losslessly.

For every reference row: the gold answer, wrapped the way a model would answer after the
pre-filled `<think>`, scores 3; a wrong but well-formed answer -0.5; an answer without
tags -3. (Solver agreement is tested with each family.)
"""

from __future__ import annotations

import glob
import os

import pyarrow.parquet as pq
import pytest

from peirce.rewards.maa import score_maa
from peirce.tasks.base import family_names
from peirce.tasks.dataset import read_tasks, write_jsonl, write_parquet
from peirce.testing import wrap_response, wrong_answer
from peirce.eval.suites import reference_dir

REF_DIR = str(reference_dir())  # ../shared/reference-data/maa or $PEIRCE_REFERENCE_DATA
REF_FILES = sorted(glob.glob(f"{REF_DIR}/*/*.parquet"))
FAMILIES = set(family_names())


def _file_param(path):
    task = os.path.basename(os.path.dirname(path))
    marks = [] if task in FAMILIES else [pytest.mark.skip(reason=f"family {task!r} not registered yet")]
    return pytest.param(path, id=os.path.relpath(path, REF_DIR), marks=marks)


pytestmark = pytest.mark.skipif(not REF_FILES, reason="reference data not present")
PARAMS = [_file_param(p) for p in REF_FILES]



@pytest.mark.parametrize("path", PARAMS)
def test_reference_rows_score_3_minus_half_minus_3(path):
    tasks = read_tasks(path)
    raw = pq.read_table(path, columns=["solution_text"])["solution_text"].to_pylist()
    assert len(tasks) == len(raw) > 0
    for t, gold in zip(tasks, raw):
        gold = str(gold)
        assert t.solution_text == gold
        turn = wrap_response(gold, "I worked it out.")
        assert score_maa(t.family, turn, gold).reward == 3.0, t.id
        bad = wrap_response(wrong_answer(gold), "I worked it out.")
        assert score_maa(t.family, bad, gold).reward == -0.5, t.id
        assert score_maa(t.family, gold, gold).reward == -3.0, t.id


@pytest.mark.parametrize("path", REF_FILES, ids=lambda p: os.path.relpath(p, REF_DIR))
def test_reference_import_and_round_trip_is_lossless(path, tmp_path):
    task_name = os.path.basename(os.path.dirname(path))
    level = int(os.path.basename(path)[len("level")])
    table = pq.read_table(path)
    tasks = read_tasks(path)
    assert {(t.family, t.level, t.split) for t in tasks} == {(task_name, level, "test")}
    assert len({t.id for t in tasks}) == len(tasks)
    texts = table["puzzle_text"].to_pylist()
    golds = [str(g) for g in table["solution_text"].to_pylist()]
    for back in (read_tasks(write_parquet(tasks, tmp_path / "r.parquet")), read_tasks(write_jsonl(tasks, tmp_path / "r.jsonl"))):
        assert back == tasks
        assert [t.puzzle_text for t in back] == texts
        assert [t.solution_text for t in back] == golds
    # The prompt peirce writes is the reference's own prompt, byte for byte.
    ours = pq.read_table(tmp_path / "r.parquet", columns=["prompt"])["prompt"].to_pylist()
    assert ours == [[{"content": p[0]["content"], "role": p[0]["role"]}] for p in table["prompt"].to_pylist()]


def test_task_and_level_inferred_or_given(tmp_path):
    src = f"{REF_DIR}/deduction/level1-test.parquet"  # no 'difficulty' column: level from the name
    if not os.path.exists(src):
        pytest.skip("reference data not present")
    renamed = tmp_path / "level3-test.parquet"
    renamed.write_bytes(open(src, "rb").read())
    tasks = read_tasks(renamed, task="deduction")
    assert {(t.family, t.level) for t in tasks} == {("deduction", 3)}
    nameless = tmp_path / "data.parquet"
    nameless.write_bytes(open(src, "rb").read())
    with pytest.raises(ValueError, match="cannot infer the task"):
        read_tasks(nameless)
    with pytest.raises(ValueError, match="cannot infer the level"):
        read_tasks(nameless, task="deduction")
