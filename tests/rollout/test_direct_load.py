"""The direct CPU load's plan (pure) and the worker's fallback to vLLM's reload.

That the direct load serves exactly the new weights, for every tensor group, in bf16 and
fp32, is checked against transformers in tests/rollout/test_weight_load_exact.py (real
vLLM); here: how checkpoint names become served parameters, and that anything the
direct path does not understand reaches vLLM's reload whole and untouched.
"""

from __future__ import annotations

import pytest
import torch

from peirce.rollout.direct_load import DirectLoadUnsupported, Target, direct_load, plan_direct_load

LLAMA_PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def test_packed_parts_are_grouped_in_the_served_order_whatever_the_checkpoint_order():
    names = ["model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.q_proj.weight",
             "model.embed_tokens.weight", "model.layers.0.self_attn.k_proj.weight",
             "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.gate_proj.weight",
             "model.layers.0.self_attn.o_proj.weight", "model.norm.weight"]
    plan = plan_direct_load(names, LLAMA_PACKED)
    assert plan == [
        Target("model.layers.0.self_attn.qkv_proj", "weight", tuple(
            f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkv"), packed=True),
        Target("model.embed_tokens", "weight", ("model.embed_tokens.weight",), packed=False),
        Target("model.layers.0.mlp.gate_up_proj", "weight", (
            "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"), packed=True),
        Target("model.layers.0.self_attn.o_proj", "weight", ("model.layers.0.self_attn.o_proj.weight",),
               packed=False),
        Target("model.norm", "weight", ("model.norm.weight",), packed=False),
    ]
    assert sorted(n for t in plan for n in t.parts) == sorted(names)  # every tensor exactly once


def test_biases_are_packed_like_weights():
    names = [f"m.attn.{p}_proj.bias" for p in "qkv"]
    (target,) = plan_direct_load(names, LLAMA_PACKED)
    assert (target.module, target.param, target.packed) == ("m.attn.qkv_proj", "bias", True)


@pytest.mark.parametrize(("names", "match"), [
    (["m.attn.q_proj.weight", "m.attn.k_proj.weight"], "packed from 3 tensors, got only"),
    (["m.norm.weight", "m.norm.weight"], "given twice"),
    (["m.attn.q_proj.scale"], "not <module>.weight"),
    (["weight"], "not <module>.weight"),
])
def test_what_the_plan_refuses(names, match):
    with pytest.raises(DirectLoadUnsupported, match=match):
        plan_direct_load(names, LLAMA_PACKED)


def test_a_plain_module_is_copied_in_place_and_an_unknown_name_refused_before_any_change():
    model = torch.nn.Sequential()
    model.add_module("norm", torch.nn.LayerNorm(4))
    before = model.norm.weight.detach().clone()
    with pytest.raises(DirectLoadUnsupported, match="no such module"):
        direct_load(model, {"norm.weight": torch.full((4,), 3.0), "lost.weight": torch.ones(2)})
    assert torch.equal(model.norm.weight.detach(), before)  # nothing touched
    with pytest.raises(DirectLoadUnsupported, match="served"):
        direct_load(model, {"norm.weight": torch.ones(5)})
    keep = model.norm.weight
    direct_load(model, {"norm.weight": torch.full((4,), 3.0), "norm.bias": torch.full((4,), -1.0)})
    assert model.norm.weight is keep and torch.equal(keep.detach(), torch.full((4,), 3.0))
    assert torch.equal(model.norm.bias.detach(), torch.full((4,), -1.0))


def test_the_worker_falls_back_to_vllms_reload_with_every_tensor():
    pytest.importorskip("vllm")
    from peirce.rollout.vllm_worker_ext import PeirceWorkerExtension

    class Runner:
        def __init__(self, model):
            self.model = model

        def get_model(self):
            return self.model

    class Worker(PeirceWorkerExtension):
        def __init__(self):
            self.model_runner = Runner(torch.nn.Sequential())
            self.reloaded = None

        def reload_weights(self, weights_iterator):
            self.reloaded = list(weights_iterator)

    w = Worker()
    tensors = [("renamed.weight", torch.ones(2)), ("other.weight", torch.zeros(3))]
    w._peirce_reload(iter(tensors))
    assert [n for n, _ in w.reloaded] == ["renamed.weight", "other.weight"]
    assert w.peirce_reload_breakdown()["path"] == "vllm"
    assert "no such module" in w.peirce_direct_refused
    w._peirce_reload(iter(tensors), direct=False)
    assert w.peirce_reload_breakdown()["path"] == "vllm"
