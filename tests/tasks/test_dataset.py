"""Puzzle sets: deterministic across processes, deduplicated, split-disjoint; file round-trips."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from peirce.tasks.base import family_names, get_family
from peirce.tasks.dataset import (
    SPLIT_FRACTIONS,
    DatasetError,
    PuzzleSpaceExhausted,
    canonical_text,
    generate_dataset,
    read_tasks,
    split_of,
    write_jsonl,
    write_parquet,
    write_tasks,
)
from peirce.tasks.prompts import TASK_INSTRUCTIONS, render_prompt

FAMILIES = [f for f in family_names() if f in TASK_INSTRUCTIONS]  # the MAA logic families
pytestmark = pytest.mark.skipif(not FAMILIES, reason="no task family is registered yet")


@pytest.fixture(params=FAMILIES)
def name(request):
    return request.param


def test_ids_splits_and_provenance(name):
    tasks = generate_dataset(name, 1, 5, "val", seed=3)
    assert [t.id for t in tasks] == [f"{name}-L1-val-{i:06d}" for i in range(5)]
    family = get_family(name)
    for t in tasks:
        assert (t.family, t.level, t.split) == (name, 1, "val")
        assert split_of(name, t.puzzle_text) == "val"
        # Task.seed regenerates exactly this puzzle.
        puzzle, text, solution = family.generate_one(1, random.Random(t.seed))
        assert (puzzle, text, solution) == (t.puzzle, t.puzzle_text, t.solution_text)


def test_deterministic_and_seed_dependent(name):
    a = generate_dataset(name, 1, 15, "train", seed=7)
    b = generate_dataset(name, 1, 15, "train", seed=7)
    c = generate_dataset(name, 1, 15, "train", seed=8)
    assert a == b
    assert [t.puzzle_text for t in a] != [t.puzzle_text for t in c]


def test_same_result_in_another_process_with_another_hash_seed(name):
    here = [t.puzzle_text for t in generate_dataset(name, 1, 10, "train", seed=11)]
    code = (
        "import json,sys; from peirce.tasks.dataset import generate_dataset; "
        f"print(json.dumps([t.puzzle_text for t in generate_dataset({name!r}, 1, 10, 'train', seed=11)]))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == here


def test_no_duplicates(name):
    tasks = generate_dataset(name, 1, 60, "train", seed=0)
    keys = [canonical_text(t.puzzle_text) for t in tasks]
    assert len(set(keys)) == len(keys)


def test_splits_are_disjoint_whatever_the_seed(name):
    train = generate_dataset(name, 1, 150, "train", seed=1)
    test = generate_dataset(name, 1, 5, "test", seed=2)  # induction L1 has only ~11 test puzzles
    val = generate_dataset(name, 1, 5, "val", seed=1)
    sets = [{canonical_text(t.puzzle_text) for t in ts} for ts in (train, test, val)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_split_hash_follows_fractions():
    counts = {s: 0 for s in SPLIT_FRACTIONS}
    n = 20_000
    for i in range(n):
        counts[split_of("deduction", f"puzzle number {i}")] += 1
    for s, frac in SPLIT_FRACTIONS.items():
        assert abs(counts[s] / n - frac) < 0.01, counts
    # Whitespace does not change the split (canonical text).
    assert split_of("x", "a  b\n c") == split_of("x", "a b c")


def test_bad_arguments_name_the_field(name):
    with pytest.raises(DatasetError, match="level=99"):
        generate_dataset(name, 99, 1, "train")
    with pytest.raises(DatasetError, match="split='dev'"):
        generate_dataset(name, 1, 1, "dev")
    with pytest.raises(DatasetError, match="n must be"):
        generate_dataset(name, 1, -1, "train")
    with pytest.raises(DatasetError, match="sum to 1"):
        generate_dataset(name, 1, 1, "train", fractions={"train": 0.5})
    with pytest.raises(Exception, match="unknown task family 'nope'"):
        generate_dataset("nope", 1, 1, "train")


def test_exhausted_space_is_a_clear_error(name):
    with pytest.raises(PuzzleSpaceExhausted, match="found only .* of n=100000") as info:
        generate_dataset(name, 1, 100_000, "test", seed=0, patience=5)
    assert isinstance(info.value, DatasetError) and info.value.n == 100_000 and info.value.found < 100_000


def test_progress_bar_runs(name, capsys):
    assert len(generate_dataset(name, 1, 3, "train", progress=True)) == 3


def test_parquet_round_trip_and_verl_layout(name, tmp_path):
    tasks = generate_dataset(name, 1, 8, "train", seed=5)
    path = write_parquet(tasks, tmp_path / "d.parquet")
    assert read_tasks(path) == tasks
    table = pq.read_table(path)
    assert table.column_names[:7] == [
        "puzzle_text", "solution_text", "data_source", "prompt", "ability", "reward_model", "extra_info",
    ]
    assert {"id", "task", "level", "puzzle"} <= set(table.column_names)
    rows = table.to_pylist()
    for i, (t, row) in enumerate(zip(tasks, rows)):
        assert row["prompt"] == [{"content": render_prompt(t).text, "role": "user"}]
        assert row["reward_model"] == {
            "ground_truth": {"solution_text_format": t.solution_text, "statements": []},
            "style": "rule",
        }
        assert row["extra_info"] == {"index": i, "split": "train"}
        assert json.loads(row["puzzle"]) == t.puzzle
    assert read_tasks(path, task="no-such-task") == []


def test_messages_prompt_style(name, tmp_path):
    tasks = generate_dataset(name, 1, 2, "train")
    rows = pq.read_table(write_parquet(tasks, tmp_path / "m.parquet", prompt_style="messages")).to_pylist()
    assert [m["role"] for m in rows[0]["prompt"]] == ["system", "user"]
    assert rows[0]["prompt"][1]["content"] == tasks[0].puzzle_text
    with pytest.raises(DatasetError, match="prompt_style='x'"):
        write_parquet(tasks, tmp_path / "x.parquet", prompt_style="x")


def test_jsonl_round_trip_and_errors(name, tmp_path):
    tasks = generate_dataset(name, 2, 8, "test", seed=5)
    path = write_tasks(tasks, tmp_path / "d.jsonl")
    assert read_tasks(path) == tasks
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["puzzle_text"] == tasks[0].puzzle_text
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n\n" + '{"id": "x"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:3: .*task"):
        read_tasks(bad)
    with pytest.raises(DatasetError, match="suffix '.csv'"):
        write_tasks(tasks, tmp_path / "d.csv")
    with pytest.raises(DatasetError, match="suffix '.txt'"):
        read_tasks(tmp_path / "d.txt")


def test_not_a_task_file(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"a": [1]}), tmp_path / "deduction.parquet")
    with pytest.raises(DatasetError, match="missing columns"):
        read_tasks(tmp_path / "deduction.parquet")



def test_worked_column_in_parquet_and_jsonl(name, tmp_path):
    """`worked=True` adds `worked_solution`: the same text in both layouts and on every
    write, fully rewarded, one of the family's phrasings; files still read back as tasks."""
    from peirce.rewards.maa import score_maa
    from peirce.tasks.dataset import worked_completion
    from peirce.tasks.prompts import THINK_PREFILL

    tasks = generate_dataset(name, 2, 12, "train", seed=9, worked=True)
    assert tasks == generate_dataset(name, 2, 12, "train", seed=9)  # same tasks either way
    pq_path = write_tasks(tasks, tmp_path / "w.parquet", worked=True)
    js_path = write_tasks(tasks, tmp_path / "w.jsonl", worked=True)
    table = pq.read_table(pq_path)
    assert table.column_names[-1] == "worked_solution"
    from_parquet = table.column("worked_solution").to_pylist()
    from_jsonl = [json.loads(line)["worked_solution"] for line in js_path.read_text().splitlines()]
    assert from_parquet == from_jsonl == [worked_completion(t) for t in tasks]
    for t, text in zip(tasks, from_parquet):
        assert score_maa(name, THINK_PREFILL + text, t.solution_text).reward == 3.0
    assert len(set(line.split("\n")[1] for line in from_parquet)) > 1  # phrasings vary across rows
    assert read_tasks(pq_path) == tasks and read_tasks(js_path) == tasks
    plain = pq.read_table(write_tasks(tasks, tmp_path / "p.parquet"))
    assert "worked_solution" not in plain.column_names
    assert "worked_solution" not in json.loads(write_jsonl(tasks, tmp_path / "p.jsonl").read_text().splitlines()[0])


def test_worked_needs_a_family_with_worked_solutions(tmp_path):
    with pytest.raises(DatasetError, match="task 'uppercase' has no worked solutions"):
        generate_dataset("uppercase", 1, 2, "train", worked=True)
    tasks = generate_dataset("uppercase", 1, 2, "train")
    for suffix in (".parquet", ".jsonl"):
        with pytest.raises(DatasetError, match="uppercase-L1-train-000000.*no worked solutions"):
            write_tasks(tasks, tmp_path / f"u{suffix}", worked=True)
        assert not list(tmp_path.iterdir())  # no partial or temporary file left behind


def test_worked_on_an_unworkable_text_names_the_task(tmp_path):
    import msgspec

    task = generate_dataset("deduction", 1, 1, "train")[0]
    broken = msgspec.structs.replace(task, id="broken-1", puzzle_text="Below are some nested formulas:\n  - (A ∨ B)\n")
    with pytest.raises(DatasetError, match="'broken-1' has no worked solution: .*3 satisfying assignments"):
        write_jsonl([broken], tmp_path / "b.jsonl", worked=True)
