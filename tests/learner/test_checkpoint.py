"""Checkpoint round trip on real DeepSpeed: exact resume, HF-loadable folder, clear errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from peirce.learner import checkpoint as ckpt
from peirce.learner.batch import Sample, collate
from peirce.learner.engine import LearnerConfig, LearnerEngine
from peirce.model.tiny import build_tiny_llama


def pg_loss(inp):
    m = inp.mask
    return -(inp.advantages * inp.logprobs * m).sum() / m.sum(), {}


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    samples = [
        Sample(torch.randint(0, 3000, (3 + i,), generator=g).tolist(),
               torch.randint(0, 3000, (2 + 2 * i,), generator=g).tolist(), 1.0 - 0.5 * i)
        for i in range(4)
    ]
    return collate(samples)


def _flat_tensors(obj, prefix=""):
    """Every tensor (and number) inside a nested optimizer state, keyed by its path."""
    out = {}
    if torch.is_tensor(obj):
        out[prefix] = obj.detach().float().cpu().clone()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_flat_tensors(v, f"{prefix}/{i}"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = torch.tensor(float(obj))
    return out


def _snapshot(engine):
    params = {n: t.float().clone() for n, t in engine.named_parameters_for_sync(torch.float32)}
    return params, _flat_tensors(engine.optimizer.state_dict())


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def model_dir():
    return build_tiny_llama()


@pytest.mark.parametrize("stage", [0, 2, 3, pytest.param(1, marks=pytest.mark.slow)])
def test_round_trip_resumes_exactly(model_dir, tmp_path, stage):
    engine = LearnerEngine(model_dir, LearnerConfig(zero_stage=stage, lr=1e-2, micro_batch_size=2, warmup_steps=3))
    engine.train_step(_batch(0), pg_loss)  # non-trivial Adam moments and lr schedule position
    extra = {"curriculum": {"family": "deduction", "level": 2}, "data_position": 17}
    out = engine.save_checkpoint(tmp_path / "ckpt", extra_state=extra)
    rng_after_save = (random.random(), np.random.rand(), torch.rand(3))
    saved = load_file(str(out / "model.safetensors"))  # full weights, gathered under ZeRO-3
    live = engine.full_state_dict()
    assert set(live) <= set(saved) and all(torch.equal(saved[n], t) for n, t in live.items())

    step = _batch(1)
    m1 = engine.train_step(step, pg_loss)
    params1, opt1 = _snapshot(engine)
    assert engine.policy_version == 2
    assert any(k.endswith("exp_avg_sq") for k in opt1), sorted(opt1)[:10]  # Adam moments are compared

    assert engine.load_checkpoint(out) == extra
    assert engine.policy_version == 1
    rng_after_load = (random.random(), np.random.rand(), torch.rand(3))
    assert rng_after_load[:2] == rng_after_save[:2] and torch.equal(rng_after_load[2], rng_after_save[2])

    m2 = engine.train_step(step, pg_loss)
    params2, opt2 = _snapshot(engine)
    _assert_same(params1, params2)
    _assert_same(opt1, opt2)
    assert m1["loss"] == m2["loss"] and m1["lr"] == m2["lr"] and m1["grad_norm"] == m2["grad_norm"]
    assert engine.policy_version == 2
    assert not ckpt.staging_dir(out).exists()


def test_saved_folder_is_a_hf_model(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    engine = LearnerEngine(model_dir, LearnerConfig(lr=1e-2, micro_batch_size=4))
    batch = _batch(2)
    engine.train_step(batch, pg_loss)
    out = engine.save_checkpoint(tmp_path / "hf", extra_state={"step": 1})
    # overwrite in place: the previous folder is replaced as a whole
    out = engine.save_checkpoint(tmp_path / "hf", extra_state={"step": 2})
    assert json.loads((out / ckpt.EXTRA_STATE).read_text()) == {"step": 2}

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and len(tok) == model.config.vocab_size
    live = engine.full_state_dict()
    saved = model.state_dict()
    for name, t in live.items():
        assert torch.equal(saved[name], t), name
    # and it computes what the engine computes
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    lp = torch.log_softmax(logits.float(), -1)
    i, p = 0, int(batch.prompt_lengths[0])
    want = lp[i, p - 1].gather(-1, batch.response_ids[i, :1]).item()
    assert engine.logprobs(batch)[0, 0].item() == pytest.approx(want, abs=2e-2)
    manifest = ckpt.Manifest.read(out)
    assert manifest.policy_version == 1 and manifest.zero_stage == 0


def test_bad_extra_state_fails_before_writing(model_dir, tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="extra_state must be JSON-serialisable"):
        ckpt.write_extra_state(tmp_path, {"bad": object()})
    with pytest.raises(ckpt.CheckpointError, match="extra_state must be a dict, got list"):
        ckpt.write_extra_state(tmp_path, [1])
    assert not (tmp_path / ckpt.EXTRA_STATE).exists()


def test_manifest_checks(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="peirce-checkpoint.json is missing"):
        ckpt.Manifest.read(tmp_path)
    m = ckpt.Manifest(ckpt.FORMAT, policy_version=3, zero_stage=2, world_size=1, bf16=True, source_model_dir="x")
    m.write(tmp_path)
    assert ckpt.Manifest.read(tmp_path) == m
    with pytest.raises(ckpt.CheckpointError, match="saved with zero_stage=2, world_size=1; this engine has zero_stage=0"):
        m.check_compatible(zero_stage=0, world_size=1)
    (tmp_path / ckpt.MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ckpt.CheckpointError, match="format must be"):
        ckpt.Manifest.read(tmp_path)


def test_rng_capture_restore():
    state = ckpt.capture_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    ckpt.restore_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[:2] == b[:2] and torch.equal(a[2], b[2])


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_serves_the_saved_checkpoint(model_dir, tmp_path):
    """vLLM loads the folder and scores responses as the learner does (trained, not initial, weights)."""
    from vllm import SamplingParams

    from peirce.model.loading import open_vllm

    engine = LearnerEngine(model_dir, LearnerConfig(lr=3e-2, micro_batch_size=4))
    batch = _batch(4)
    initial = engine.logprobs(batch)
    for _ in range(2):
        engine.train_step(batch, pg_loss)
    trained = engine.logprobs(batch)
    out = engine.save_checkpoint(tmp_path / "served")
    mask = batch.response_mask.bool()
    assert (trained - initial)[mask].abs().max() > 0.2  # the comparison below can tell them apart

    with open_vllm(out, max_model_len=128) as llm:
        prompts = [{"prompt_token_ids": batch.input_ids[i, : int(batch.seq_lengths[i])].tolist()}
                   for i in range(batch.size)]
        results = llm.generate(prompts, SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0),
                               use_tqdm=False)
    for i, res in enumerate(results):
        p, r = int(batch.prompt_lengths[i]), int(batch.response_lengths[i])
        ids = prompts[i]["prompt_token_ids"]
        served = [res.prompt_logprobs[t][ids[t]].logprob for t in range(p, p + r)]
        assert served == pytest.approx(trained[i, :r].tolist(), abs=0.05)
