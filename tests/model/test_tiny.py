"""The tiny random Llama: cached, vLLM-compatible, and identical in transformers and vLLM.

Its logits are nearly flat (log-probs within ~0.2 of -ln(vocab)), so greedy tokens are a
weak check; instead the prompt log-probs from both engines are compared token by token.
Different weights would differ by ~0.2 nats, bf16 rounding by ~0.002.
"""

from __future__ import annotations

import json

import pytest

from peirce.cli.main import main as cli_main
from peirce.model.loading import open_vllm, read_model_info, vllm_cpu_kwargs
from peirce.model.tiny import VLLM_CPU_HEAD_SIZES, build_tiny_llama

PROMPT = "The capital of France is"


def test_build_is_cached(tiny_model_dir):
    weights = tiny_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert build_tiny_llama() == tiny_model_dir
    assert weights.stat().st_mtime_ns == before


def test_unsupported_head_dim_is_rejected_before_writing(tmp_path):
    out = tmp_path / "tiny"
    with pytest.raises(ValueError, match=r"head_dim 16\.0"):
        build_tiny_llama(out, hidden_size=64, num_heads=4)
    assert not out.exists()


def test_info_is_vllm_compatible(tiny_model_dir):
    info = read_model_info(tiny_model_dir)
    assert info.head_dim in VLLM_CPU_HEAD_SIZES
    assert info.architecture == "LlamaForCausalLM"
    assert info.has_chat_template
    assert 2_000_000 < info.num_parameters < 5_000_000
    meta = json.loads((tiny_model_dir / "peirce-tiny.json").read_text())
    assert meta["heads"] == info.num_heads



def test_cli_model_info_text_for_any_folder(tiny_model_dir, capsys):
    assert cli_main(["model", "info", "--path", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    info = read_model_info(tiny_model_dir)
    assert f"head_dim {info.head_dim}" in out
    assert f"{info.num_parameters:,}" in out
    assert "model.safetensors" in out and "MiB" in out

@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, tokenizer


def _hf_prompt_logprobs(hf, text: str) -> tuple[list[int], list[float]]:
    import torch

    model, tokenizer = hf
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]
    targets = ids[0, 1:]
    return ids[0].tolist(), logprobs[:-1].gather(1, targets[:, None])[:, 0].tolist()


def test_transformers_loads_and_generates(hf, tiny_model_dir):
    model, tokenizer = hf
    assert model.config.vocab_size == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) == read_model_info(tiny_model_dir).num_parameters
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    out = model.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids.shape[1] + 6


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir):
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with open_vllm(tiny_model_dir, max_model_len=256) as llm:
        yield llm
    # open_vllm must not leave the engine-core and worker processes (and the KV cache) behind.
    # vLLM SIGKILLs a worker that ignores SIGTERM, so allow the kernel a moment to reap it;
    # multiprocessing's resource tracker legitimately lives as long as this process.
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(new, timeout=15)
    leftover = [p for p in alive if "resource_tracker" not in " ".join(_cmdline(p))]
    assert not leftover, f"vLLM processes still running after shutdown: {leftover}"


def _cmdline(proc) -> list[str]:
    import psutil

    try:
        return proc.cmdline()
    except psutil.Error:
        return []


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_generates_requested_number_of_tokens(vllm_engine, hf):
    from vllm import SamplingParams

    _, tokenizer = hf
    params = SamplingParams(temperature=1.0, max_tokens=16, ignore_eos=True, n=2)
    [out] = vllm_engine.generate([PROMPT], params, use_tqdm=False)
    assert len(out.outputs) == 2
    for completion in out.outputs:
        assert len(completion.token_ids) == 16
        assert all(0 <= t < len(tokenizer) for t in completion.token_ids)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_and_transformers_agree_on_prompt_logprobs(vllm_engine, hf):
    from vllm import SamplingParams

    ids, hf_logprobs = _hf_prompt_logprobs(hf, PROMPT)
    [out] = vllm_engine.generate([PROMPT], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    assert list(out.prompt_token_ids) == ids
    vllm_logprobs = [entry[tok].logprob for entry, tok in zip(out.prompt_logprobs[1:], ids[1:], strict=True)]
    assert vllm_logprobs == pytest.approx(hf_logprobs, abs=0.02)
    # The comparison discriminates: the log-probs spread far more than the tolerance.
    assert max(hf_logprobs) - min(hf_logprobs) > 0.1



def test_vllm_cpu_kwargs_defaults_and_overrides(tiny_model_dir):
    kwargs = vllm_cpu_kwargs(tiny_model_dir, max_model_len=128, enforce_eager=False, seed=3)
    assert kwargs["model"] == str(tiny_model_dir)
    assert kwargs["dtype"] == "bfloat16"
    assert kwargs["max_model_len"] == 128
    assert kwargs["enforce_eager"] is False
    assert kwargs["seed"] == 3
