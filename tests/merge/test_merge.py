"""Real mergekit merges of tiny Llamas, checked tensor by tensor against torch arithmetic.

Expected values are computed here in float64 straight from the input safetensors files;
merges run with dtype float32 where exactness is wanted (inputs are bf16, so float32
arithmetic on them is exact up to float32 rounding of the weighted sums).
"""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml
from merge_helpers import SPECIALISTS, load_state, write_variant

from peirce.merge import MergeError, parse_merge_config, run_merge

REF = {"deduction": 1.0, "induction": 0.2, "abduction": 0.1}


def merge(tmp_path, data: dict, name: str = "out") -> dict:
    out = run_merge(parse_merge_config(data), tmp_path / name)
    assert out == (tmp_path / name).resolve()
    return load_state(out)


def assert_state_close(merged: dict, expected: dict, *, rtol: float, atol: float) -> None:
    assert set(merged) == set(expected)
    for key, want in expected.items():
        torch.testing.assert_close(merged[key].double(), want, rtol=rtol, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def linear_expected(states: dict, weights: dict, normalize: bool) -> dict:
    total = sum(weights.values()) if normalize else 1.0
    keys = states[SPECIALISTS[0]]
    return {k: sum(weights[n] * states[n][k].double() for n in SPECIALISTS) / total for k in keys}


def task_arithmetic_expected(states: dict, base: dict, weights: dict) -> dict:
    return {k: b.double() + sum(weights[n] * (states[n][k].double() - b.double()) for n in SPECIALISTS) for k, b in base.items()}


def ties_reference(base: torch.Tensor, deltas: list[torch.Tensor], weights: list[float], normalize: bool):
    """TIES (arXiv 2306.01708) after trimming: elect each entry's sign by the weighted delta sum
    (ties go to +), average only the deltas with that sign. Returns (merged, ambiguous entries)."""
    wd = torch.stack([w * d.double() for w, d in zip(weights, deltas)])
    total = wd.sum(0)
    elected = torch.where(total >= 0, 1.0, -1.0).double()
    agree = wd.sign() == elected  # a zero delta has sign 0: never counted
    w = torch.tensor(weights, dtype=torch.float64).reshape(-1, *[1] * base.dim())
    mixed = (wd * agree).sum(0)
    if normalize:
        divisor = (w * agree).sum(0)
        mixed = mixed / torch.where(divisor == 0, 1.0, divisor)
    # near-ties (even exact float64 ties: 0.0016479 + 0.2 * 0.0065918 = 0.1 * 0.0296631) may be elected
    # either way by mergekit's float32 sums; entries with no delta at all are not ambiguous (base)
    ambiguous = (total.abs() < 1e-6) & (wd != 0).any(0)
    return base.double() + mixed, ambiguous


def test_linear_normalised_matches_weighted_average(tmp_path, quartet, quartet_states, cfg_dict):
    merged = merge(tmp_path, cfg_dict)
    want = linear_expected(quartet_states, REF, normalize=True)
    assert_state_close(merged, want, rtol=1e-6, atol=1e-7)
    # the unnormalised combination is 1.3x larger: this check can tell the two apart
    other = linear_expected(quartet_states, REF, normalize=False)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged[key].double(), other[key], rtol=1e-2, atol=1e-4)
    assert merged[key].dtype == torch.float32


def test_linear_unnormalised(tmp_path, quartet_states, cfg_dict):
    weights = {"deduction": 0.5, "induction": 0.3, "abduction": -0.25}
    merged = merge(tmp_path, {**cfg_dict, "weights": weights, "normalize": False})
    assert_state_close(merged, linear_expected(quartet_states, weights, normalize=False), rtol=1e-6, atol=1e-7)


def test_linear_bf16_default_dtype(tmp_path, quartet_states, cfg_dict):
    data = {k: v for k, v in cfg_dict.items() if k != "dtype"}
    merged = merge(tmp_path, data)
    assert all(t.dtype == torch.bfloat16 for t in merged.values())
    # bf16 keeps 8 significant bits: relative error at most 2**-9 after rounding a float32 sum
    assert_state_close(merged, linear_expected(quartet_states, REF, normalize=True), rtol=2**-8, atol=1e-8)


def test_task_arithmetic(tmp_path, quartet, quartet_states, cfg_dict):
    data = {**cfg_dict, "method": "task_arithmetic", "base_model": str(quartet["base"])}
    merged = merge(tmp_path, data)
    want = task_arithmetic_expected(quartet_states, quartet_states["base"], REF)
    assert_state_close(merged, want, rtol=1e-6, atol=1e-6)
    spec = yaml.safe_load((tmp_path / "out" / "merge.yaml").read_text())
    assert spec["merge_method"] == "task_arithmetic" and spec["parameters"] == {"normalize": False}


def test_ties_density_one_elects_signs(tmp_path, quartet, quartet_states, cfg_dict):
    """Random specialists conflict on about half the entries: every tensor matches the reference."""
    merged = merge(tmp_path, {**cfg_dict, "method": "ties", "base_model": str(quartet["base"])})
    base = quartet_states["base"]
    conflicts = 0
    for key, b in base.items():
        deltas = [quartet_states[n][key].float() - b.float() for n in SPECIALISTS]
        want, ambiguous = ties_reference(b, deltas, list(REF.values()), normalize=True)
        assert ambiguous.float().mean() < 0.01, key
        ok = ~ambiguous
        torch.testing.assert_close(merged[key].double()[ok], want[ok], rtol=1e-6, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
        signs = torch.stack([d.sign() for d in deltas])
        conflicts += int(((signs > 0).any(0) & (signs < 0).any(0)).sum())
    assert conflicts > 1000  # the test really exercised the sign election


# --- hand-built TIES case: base + chosen deltas on model.norm.weight (64 entries, base all 1.0) ---
# Eight blocks of 8 entries. Magnitudes >= 0.25 are kept at density 0.5 (exactly 32 per model),
# magnitudes <= 0.0625 are trimmed. Weights 1.0 / 0.2 / 0.1.
BLOCKS = [  # (deduction, induction, abduction) delta, expected normalised, expected unnormalised
    ((0.5, 0.25, 0.25), 0.575 / 1.3, 0.575),  # all agree
    ((0.5, -1.0, -1.0), 0.5, 0.5),  # conflict: weighted sum +0.2 elects +, only deduction counts
    ((-0.25, 2.0, 2.0), 2.0, 0.6),  # conflict: +0.35 elects +, deduction dropped
    ((0.03125, 0.5, -0.0625), 0.5, 0.1),  # deduction and abduction trimmed
    ((0.0625, -0.03125, 0.046875), 0.0, 0.0),  # all trimmed: base stays
    ((0.0625, 0.03125, -0.5), -0.5, -0.05),  # untrimmed the sum would be +0.019 and elect +
    ((0.25, -0.0625, -0.0625), 0.25, 0.25),  # only deduction kept
    ((-0.046875, 0.0625, -0.03125), 0.0, 0.0),  # all trimmed
]


@pytest.fixture(scope="module")
def hand_built(quartet, tmp_path_factory):
    base_state = load_state(quartet["base"])
    base32 = {k: v.float() for k, v in base_state.items()}
    assert torch.equal(base32["model.norm.weight"], torch.ones(64))
    root = tmp_path_factory.mktemp("hand")
    folders = {"base": write_variant(quartet["base"], root / "base", base32)}
    for i, name in enumerate(SPECIALISTS):
        delta = torch.tensor([blk[0][i] for blk in BLOCKS for _ in range(8)], dtype=torch.float32)
        folders[name] = write_variant(quartet["base"], root / name, {**base32, "model.norm.weight": 1.0 + delta})
    return folders, base32


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_trims_then_elects_signs(tmp_path, hand_built, normalize):
    folders, base32 = hand_built
    data = {
        "method": "ties",
        "models": {n: str(folders[n]) for n in SPECIALISTS},
        "base_model": str(folders["base"]),
        "density": 0.5,
        "normalize": normalize,
        "dtype": "float32",
    }
    merged = merge(tmp_path, data)
    want = torch.tensor([1.0 + blk[1 if normalize else 2] for blk in BLOCKS for _ in range(8)], dtype=torch.float64)
    torch.testing.assert_close(merged["model.norm.weight"].double(), want, rtol=0, atol=1e-6)
    for key, b in base32.items():  # no delta anywhere else: the base comes through unchanged
        if key != "model.norm.weight":
            assert torch.equal(merged[key], b), key


def test_ties_without_conflicts_equals_task_arithmetic(tmp_path, quartet, quartet_states):
    """density 1, every delta of an entry has the same sign, no normalisation: TIES adds nothing."""
    base = {k: v.float() for k, v in quartet_states["base"].items()}
    gen = torch.Generator().manual_seed(7)
    sign = {k: torch.where(torch.rand(v.shape, generator=gen) < 0.5, -1.0, 1.0) for k, v in base.items()}
    root = tmp_path / "in"
    folders = {"base": write_variant(quartet["base"], root / "base", base)}
    for name in SPECIALISTS:
        state = {k: v + sign[k] * 0.01 * torch.rand(v.shape, generator=gen) for k, v in base.items()}
        folders[name] = write_variant(quartet["base"], root / name, state)
    common = {
        "models": {n: str(folders[n]) for n in SPECIALISTS},
        "base_model": str(folders["base"]),
        "weights": {"deduction": 1.0, "induction": 0.5, "abduction": 0.25},
        "normalize": False,
        "dtype": "float32",
    }
    ties = merge(tmp_path, {**common, "method": "ties", "density": 1.0}, "ties")
    ta = merge(tmp_path, {**common, "method": "task_arithmetic"}, "ta")
    states = {n: load_state(folders[n]) for n in SPECIALISTS}
    assert_state_close(ta, task_arithmetic_expected(states, base, common["weights"]), rtol=1e-6, atol=1e-6)
    for key in base:
        torch.testing.assert_close(ties[key], ta[key], rtol=1e-6, atol=1e-7)


def test_missing_folder_is_an_error_before_mergekit(tmp_path, cfg_dict):
    bad = {**cfg_dict, "models": {**cfg_dict["models"], "induction": str(tmp_path / "nope")}}
    with pytest.raises(MergeError, match=r"models\.induction: .*nope.* does not exist \(a local HF folder is required"):
        run_merge(parse_merge_config(bad), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    bad = {**cfg_dict, "models": {**cfg_dict["models"], "abduction": str(tmp_path / "empty")}}
    with pytest.raises(MergeError, match=r"models\.abduction: .* has no config\.json"):
        run_merge(parse_merge_config(bad), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_base_folder_named(tmp_path, cfg_dict):
    data = {**cfg_dict, "method": "ties", "base_model": "org/some-hub-model"}
    with pytest.raises(MergeError, match=r"base_model: 'org/some-hub-model' does not exist"):
        run_merge(parse_merge_config(data), tmp_path / "out")


def test_refuses_non_empty_out_dir_unless_overwrite(tmp_path, cfg_dict):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    cfg = parse_merge_config({**cfg_dict, "weights": {"deduction": 1.0, "induction": 0.0, "abduction": 0.0}})
    with pytest.raises(MergeError, match="is not empty"):
        run_merge(cfg, out)
    assert (out / "keep.txt").exists()
    run_merge(cfg, out, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert not list(tmp_path.glob(".tmp-merge-*"))


def test_output_folder_loads_in_transformers(tmp_path, quartet, quartet_states, cfg_dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = run_merge(parse_merge_config({k: v for k, v in cfg_dict.items() if k != "dtype"}), tmp_path / "m")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "merge.yaml", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= names
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    merged = load_state(out)
    sd = model.state_dict()
    for key, t in merged.items():
        assert torch.equal(sd[key], t), key
    assert torch.equal(sd["lm_head.weight"], merged["model.embed_tokens.weight"])  # tied, as in the inputs
    tok = AutoTokenizer.from_pretrained(out)
    ref_tok = AutoTokenizer.from_pretrained(quartet["deduction"])
    msgs = [{"role": "user", "content": "Is A true?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


def test_same_folder_rewritten_between_merges_is_read_again(tmp_path, quartet, quartet_states):
    """mergekit caches tensor loaders per path for the whole process; a specialist retrained
    into the same folder must not be merged from the stale cache (long-lived MergeActor)."""
    names = ("deduction", "induction")
    folders = {n: tmp_path / n for n in names}
    for n in names:
        write_variant(quartet[n], folders[n], {k: v.float() for k, v in quartet_states[n].items()})
    data = {"models": {n: str(folders[n]) for n in names}, "weights": {"deduction": 1.0, "induction": 1.0}, "dtype": "float32"}
    first = merge(tmp_path, data, "first")
    key = "model.layers.0.mlp.down_proj.weight"
    shutil.rmtree(folders["induction"])
    write_variant(quartet["abduction"], folders["induction"], {k: v.float() for k, v in quartet_states["abduction"].items()})
    second = merge(tmp_path, data, "second")
    want = (quartet_states["deduction"][key].double() + quartet_states["abduction"][key].double()) / 2
    torch.testing.assert_close(second[key].double(), want, rtol=1e-6, atol=1e-7)
    assert not torch.equal(first[key], second[key])


def test_architecture_mismatch_named_before_mergekit(tmp_path, cfg_dict):
    from peirce.model.tiny import build_tiny_llama

    wide = build_tiny_llama(hidden_size=128, num_heads=2, seed=0)
    data = {**cfg_dict, "models": {**cfg_dict["models"], "abduction": str(wide)}}
    with pytest.raises(MergeError, match=r"models\.abduction: config\.json hidden_size=128 differs from models\.deduction's 64"):
        run_merge(parse_merge_config(data), tmp_path / "out")
