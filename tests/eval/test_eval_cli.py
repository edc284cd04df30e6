"""`peirce eval` argument errors (no vLLM is started) and `--compare` tables."""

from __future__ import annotations

import json

import pytest
from eval_helpers import make_result

from peirce.cli.main import main
from peirce.eval.runner import save_result


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")  # enough for argument checks; no engine starts on these errors
    return d


def run(capsys, *argv):
    code = main(["eval", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "message"), [
    (["--suite", "maa-logic"], "suite='maa-logic': unknown; valid: maa-deduction"),
    (["--file", "/no/such/file.jsonl", "--format", "math500"], "--file '/no/such/file.jsonl': no such file"),
    (["--file", "x.jsonl"], "--file needs --format"),
    (["--suite", "math-sample", "--n", "2", "--temperature", "1", "--k", "1,8"], "k <= n=2"),
    (["--suite", "math-sample", "--n", "4"], "temperature=0 is greedy"),
    (["--suite", "math-sample", "--top-p", "0"], "top_p=0.0"),
    (["--suite", "maa-deduction", "--levels", "9"], "levels=(9,)"),
    ([], "nothing to evaluate"),
])
def test_bad_arguments_fail_fast_with_a_clear_message(capsys, model_dir, argv, message):
    code, out, err = run(capsys, "--model", model_dir, *argv)
    assert code == 1 and out == ""
    assert err.startswith("peirce eval: error: ") and message in err


def test_model_must_be_a_model_folder(capsys, tmp_path):
    code, _, err = run(capsys, "--model", tmp_path / "missing", "--suite", "math-sample")
    assert code == 1 and "not a model folder" in err
    code, _, err = run(capsys, "--suite", "math-sample")
    assert code == 1 and "--model DIR is required" in err


def test_bad_file_row_is_reported_not_raised(capsys, model_dir, tmp_path):
    bad = tmp_path / "gpqa.csv"
    bad.write_text("Question,Correct Answer\nq,a\n")
    code, _, err = run(capsys, "--model", model_dir, "--file", bad, "--format", "gpqa")
    assert code == 1 and "row 0" in err and "Incorrect Answer 1" in err


def test_k_must_be_ints(capsys, model_dir):
    with pytest.raises(SystemExit):
        main(["eval", "--model", str(model_dir), "--suite", "math-sample", "--k", "1,x"])
    assert "expected comma-separated ints" in capsys.readouterr().err


def test_compare_builds_side_by_side_table(capsys, tmp_path):
    base = save_result(make_result("base", {"math-sample": {"pass@1": 0.25}, "maa-deduction": {"pass@1": 0.5}}),
                       tmp_path / "base" / "results.json")
    merged = save_result(make_result("merged", {"math-sample": {"pass@1": 0.5}}), tmp_path / "merged" / "results.json")
    code, out, err = run(capsys, "--compare", f"base={base}", f"merged={merged}", "--out", tmp_path / "table")
    assert code == 0, err
    assert "| model | math-sample | maa-deduction | average |" in out
    assert "| base | 25.0 | **50.0** | 37.5 |" in out and "| merged | **50.0** | - | **50.0**\\* |" in out
    assert (tmp_path / "table" / "table.md").read_text() == out
    table = json.loads((tmp_path / "table" / "table.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["base", "merged"]


def test_compare_errors(capsys, tmp_path, model_dir):
    code, _, err = run(capsys, "--compare", "no-equals-sign")
    assert code == 1 and "expected NAME=PATH" in err
    code, _, err = run(capsys, "--compare", f"a={tmp_path / 'missing.json'}")
    assert code == 1 and "no such file" in err
    (tmp_path / "junk.json").write_text('{"model": 3}')
    code, _, err = run(capsys, "--compare", f"a={tmp_path / 'junk.json'}")
    assert code == 1 and "not an eval result" in err
    good = save_result(make_result("x", {"s": {"pass@1": 1.0}}), tmp_path / "r.json")
    code, _, err = run(capsys, "--compare", f"a={good}", "--metric", "pass@64")
    assert code == 1 and "pass@64" in err
    code, _, err = run(capsys, "--compare", f"a={good}", "--model", model_dir)
    assert code == 1 and "do not combine" in err
