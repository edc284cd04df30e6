"""Every tensor group the engine serves takes new weights on an in-place load.

Why this test exists: with tied embeddings, vLLM's reload refreshed the embedding but left
the CPU output head's packed kernel stale on AVX512-BF16 hosts (and for fp32 engines):
training went silently off-policy. A whole-model check with small steps missed it, so
here each group is perturbed *alone*, strongly, and the engine must (a) agree with
transformers on the same weights within the served dtype's rounding and (b) have moved
about as far as transformers did. Runs with a bf16 and an fp32 engine on whatever CPU kind
the host has.
"""

from __future__ import annotations

import pytest
import torch

PROMPT = [5, 17, 99, 3, 42, 7, 64, 12]
RESPONSE = [11, 23, 5, 8, 19, 77, 2, 31, 40, 9]
# engine vs transformers on identical weights: bf16 kernels round activations, so the gap
# may grow with the logits' scale (a strongly perturbed embedding moves logprobs ~13 nats;
# bf16 keeps ~0.4% relative precision): absolute part + relative part of how far it moved
TOLERANCE = {"bfloat16": 0.03, "float32": 1e-3}
RELATIVE = {"bfloat16": 0.01, "float32": 1e-4}


def tensor_groups(names: list[str], num_layers: int) -> dict[str, list[str]]:
    """Embedding (= the tied head), each layer's attention, MLP and norms, the final norm."""
    groups = {"embedding+tied_head": [n for n in names if "embed_tokens" in n]}
    for i in range(num_layers):
        layer = [n for n in names if f"layers.{i}." in n]
        groups[f"layer{i}.attention"] = [n for n in layer if "self_attn" in n]
        groups[f"layer{i}.mlp"] = [n for n in layer if ".mlp." in n]
        groups[f"layer{i}.norms"] = [n for n in layer if "layernorm" in n]
    groups["final_norm"] = [n for n in names if n == "model.norm.weight"]
    if "lm_head.weight" in names:
        groups["untied_head"] = ["lm_head.weight"]
    covered = {n for g in groups.values() for n in g}
    assert covered == set(names), f"tensors in no group: {sorted(set(names) - covered)}"
    assert all(groups.values()), [k for k, v in groups.items() if not v]
    return groups


def perturbed(state: dict[str, torch.Tensor], names: list[str], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = dict(state)
    for n in names:
        w = state[n].float()
        scale = 2.0 if w.dim() == 1 else max(0.5 * w.std().item(), 0.3)  # norms: ~1, std 0
        out[n] = (w + scale * torch.randn(w.shape, generator=g)).to(state[n].dtype)
    return out


def reference_logprobs(model: torch.nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype) -> list[float]:
    """transformers' logprobs of RESPONSE on `state` rounded to the served dtype, computed in fp32."""
    model.load_state_dict({k: v.to(dtype).float() for k, v in state.items()}, strict=False)
    model.tie_weights()
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([PROMPT + RESPONSE])).logits[0].float(), -1)
    return [lp[len(PROMPT) + j - 1, t].item() for j, t in enumerate(RESPONSE)]


def max_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize(("dtype", "path"), [("bfloat16", "direct"), ("float32", "direct"), ("bfloat16", "vllm")])
def test_every_tensor_group_reaches_the_engine(tiny_dir, tiny_state, dtype, path):
    """Both load paths: peirce's direct CPU load (the default) and vLLM's layerwise reload
    (what the direct path falls back to for a model it does not understand)."""
    pytest.importorskip("vllm")
    from transformers import AutoConfig, AutoModelForCausalLM

    from peirce.rollout.engine import RolloutEngine

    cfg = AutoConfig.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, torch_dtype=torch.float32).eval()
    served = getattr(torch, dtype)
    groups = tensor_groups(list(tiny_state), cfg.num_hidden_layers)
    eng = RolloutEngine(tiny_dir, dtype=dtype, max_model_len=256, seed=0, kv_cache_gib=0.25,
                        direct_load=path == "direct")
    try:
        base_engine = eng.sequence_logprobs(PROMPT, RESPONSE)
        base_ref = reference_logprobs(model, tiny_state, served)
        assert max_gap(base_engine, base_ref) < TOLERANCE[dtype]
        failures = []
        for version, (group, names) in enumerate(groups.items(), start=1):
            state = perturbed(tiny_state, names, seed=version)
            eng.load_weights(state.items(), version=version)
            assert eng.reload_breakdown()["path"] == path
            got = eng.sequence_logprobs(PROMPT, RESPONSE)
            want = reference_logprobs(model, state, served)
            gap, moved, ref_moved = max_gap(got, want), max_gap(got, base_engine), max_gap(want, base_ref)
            assert ref_moved > 5 * TOLERANCE[dtype], f"{group}: perturbation too small to test ({ref_moved:.4f})"
            if gap > TOLERANCE[dtype] + RELATIVE[dtype] * ref_moved or moved < 0.5 * ref_moved:
                failures.append(f"{group}: engine-vs-transformers {gap:.4f} nats, engine moved {moved:.4f}, "
                                f"transformers moved {ref_moved:.4f}")
        assert not failures, "; ".join(failures)
        # and back: the original weights serve the original logprobs again
        eng.load_weights(tiny_state.items(), version=len(groups) + 1)
        assert max_gap(eng.sequence_logprobs(PROMPT, RESPONSE), base_engine) < 1e-6
    finally:
        eng.close()


def test_tensor_groups_cover_every_tensor_once():
    names = ["model.embed_tokens.weight", "model.norm.weight",
             *[f"model.layers.{i}.{p}" for i in range(2) for p in (
                 "self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight")]]
    groups = tensor_groups(names, 2)
    assert sorted(n for g in groups.values() for n in g) == sorted(names)
    assert groups["layer1.mlp"] == ["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(AssertionError, match="in no group"):
        tensor_groups([*names, "model.rotary.inv_freq"], 2)
