"""Named suites: generated MAA test splits, released reference files, shipped samples, files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from peirce.eval.suites import REFERENCE_ENV, SuiteError, SuiteOptions, file_suite_name, load_suite, reference_dir

REFERENCE = reference_dir()


@pytest.mark.parametrize("task", ["deduction", "induction", "abduction"])
def test_generated_maa_suites_use_the_test_split(task):
    s = load_suite(f"maa-{task}", SuiteOptions(levels=(1, 2), per_level=3, seed=5))
    assert s.name == f"maa-{task}" and len(s.tasks) == 6
    assert {t.split for t in s.tasks} == {"test"} and {t.family for t in s.tasks} == {task}
    assert sorted(t.level for t in s.tasks) == [1, 1, 1, 2, 2, 2]
    again = load_suite(f"maa-{task}", SuiteOptions(levels=(1, 2), per_level=3, seed=5))
    assert [t.puzzle_text for t in again.tasks] == [t.puzzle_text for t in s.tasks]
    other = load_suite(f"maa-{task}", SuiteOptions(levels=(1,), per_level=3, seed=6))
    assert [t.puzzle_text for t in other.tasks] != [t.puzzle_text for t in s.tasks[:3]]


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference data not present")
def test_reference_suite_reads_env_path(tmp_path, monkeypatch):
    (tmp_path / "induction").mkdir()
    shutil.copy(REFERENCE / "induction" / "level2-test.parquet", tmp_path / "induction")
    monkeypatch.setenv(REFERENCE_ENV, str(tmp_path))
    s = load_suite("maa-reference-induction")
    assert len(s.tasks) == 100 and {t.level for t in s.tasks} == {2} and s.tasks[0].family == "induction"
    with pytest.raises(SuiteError, match="none of levels"):
        load_suite("maa-reference-induction", SuiteOptions(levels=(1,)))
    with pytest.raises(SuiteError, match=REFERENCE_ENV):
        load_suite("maa-reference-deduction")  # no deduction/ folder there


def test_reference_dir_default_is_relative_to_repo(monkeypatch):
    monkeypatch.delenv(REFERENCE_ENV, raising=False)
    root = Path(__file__).resolve().parents[2]
    assert reference_dir() == (root / "../shared/reference-data/maa").resolve()
    monkeypatch.setenv(REFERENCE_ENV, "data/ref")
    assert reference_dir() == root / "data/ref"


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference data not present")
def test_reference_suite_levels_and_limit():
    s = load_suite("maa-reference-abduction", SuiteOptions(levels=(1, 3), limit=250, reference_dir=REFERENCE))
    assert len(s.tasks) == 250 and {t.level for t in s.tasks} == {1, 3}


@pytest.mark.parametrize(("name", "family", "count"), [("math-sample", "math", 8), ("code-sample", "code", 4),
                                                      ("science-sample", "science", 4)])
def test_sample_suites(name, family, count):
    s = load_suite(name)
    assert len(s.tasks) == count and {t.family for t in s.tasks} == {family} and {t.split for t in s.tasks} == {"test"}


def test_file_suite_and_naming(math500_file):
    s = load_suite(f"file:math500:{math500_file}", SuiteOptions(limit=1))
    assert len(s.tasks) == 1 and s.tasks[0].family == "math"
    assert file_suite_name("math500", math500_file, set()) == "math500"
    assert file_suite_name("math500", math500_file, {"math500"}) == "math500-math500"
    with pytest.raises(SuiteError, match="file:<format>:<path>"):
        load_suite(f"file:nope:{math500_file}")


@pytest.mark.parametrize("kwargs", [{"levels": (0,)}, {"levels": ()}, {"per_level": 0}, {"limit": 0}])
def test_bad_options(kwargs):
    with pytest.raises(SuiteError, match=next(iter(kwargs))):
        SuiteOptions(**kwargs)


def test_unknown_suite_lists_valid_names():
    with pytest.raises(SuiteError) as err:
        load_suite("maa-logic")
    assert "maa-logic" in str(err.value) and "maa-deduction" in str(err.value) and "math-sample" in str(err.value)
