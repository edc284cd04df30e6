"""A direct in-place load for vLLM's CPU backend: new checkpoint tensors straight into the
served model, skipping the generic layerwise reload.

Why: on CPU, vLLM's `reload_weights` (layerwise) puts every layer back on the meta device,
re-materialises it, buffers each tensor through its weight loader, repacks, and copies the
result back into the old storage. Profiled on SmolLM2-135M bf16 (avx512_bf16 host) its
0.18-0.20 s were 0.069 s of oneDNN repacking, 0.034 s of copies and ~0.08 s of Python
bookkeeping over 182 layers. What a load needs is only: each fused linear weight
(q|k|v, gate|up) concatenated once and handed to the layer's own
`process_weights_after_loading` (which builds the CPU kernel: oneDNN, sgl or plain linear,
whichever vLLM chose at start-up), and every other tensor (embedding, norms, biases) copied
into its existing Parameter, then the kernels of those layers rebuilt.

The plan is pure (names in, targets out) and is checked in full before anything is
touched; anything it does not recognise (quantised layers, tensor parallelism, padded
vocabularies, renamed checkpoints, a packed group missing a part) makes the caller fall
back to vLLM's reload, so the direct path can be wrong only by being unused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class DirectLoadUnsupported(Exception):
    """This model or these tensors need vLLM's generic reload (the message says why)."""


@dataclass(frozen=True)
class Target:
    """One served parameter and the checkpoint tensors that make it, in order along dim 0."""

    module: str  # served module path, e.g. "model.layers.0.self_attn.qkv_proj"
    param: str  # "weight" or "bias"
    parts: tuple[str, ...]  # checkpoint names, e.g. (...q_proj.weight, ...k_proj.weight, ...v_proj.weight)
    packed: bool  # several checkpoint tensors fused into one served parameter


def plan_direct_load(names: Sequence[str], packed_modules: Mapping[str, Sequence[str]]) -> list[Target]:
    """Group checkpoint names into served parameters using the model's `packed_modules_mapping`
    ({"qkv_proj": ["q_proj", "k_proj", "v_proj"], ...}); raises DirectLoadUnsupported on a
    name that is not `<module>.<weight|bias>`, a duplicate, or a packed group with parts missing."""
    part_of = {part: (fused, i) for fused, parts in packed_modules.items() for i, part in enumerate(parts)}
    groups: dict[tuple[str, str], list[str | None]] = {}
    order: list[tuple[str, str]] = []
    for name in names:
        module, _, param = name.rpartition(".")
        if param not in ("weight", "bias") or not module:
            raise DirectLoadUnsupported(f"{name!r}: not <module>.weight or <module>.bias")
        parent, _, leaf = module.rpartition(".")
        if leaf in part_of:
            fused, index = part_of[leaf]
            key = (f"{parent}.{fused}" if parent else fused, param)
            slots = groups.setdefault(key, [None] * len(packed_modules[fused]))
        else:
            key, index = (module, param), 0
            slots = groups.setdefault(key, [None])
        if key not in order:
            order.append(key)
        if slots[index] is not None:
            raise DirectLoadUnsupported(f"{name!r}: given twice")
        slots[index] = name
    targets = []
    for key in order:
        slots = groups[key]
        if any(s is None for s in slots):
            have = [s for s in slots if s is not None]
            raise DirectLoadUnsupported(f"{key[0]}.{key[1]}: packed from {len(slots)} tensors, got only {have}")
        targets.append(Target(module=key[0], param=key[1], parts=tuple(slots),  # type: ignore[arg-type]
                              packed=len(slots) > 1))
    return targets


def parameter_users(modules: Iterable[Any]) -> dict[int, list[Any]]:
    """id(Parameter) -> the modules holding it directly (two or more: a shared weight, e.g.
    an output head tied to the embedding)."""
    users: dict[int, list[Any]] = {}
    for module in modules:
        for p in module._parameters.values():
            if p is not None:
                users.setdefault(id(p), []).append(module)
    return users


def has_kernel(module: Any) -> bool:
    """Whether vLLM builds this layer's compute kernel from its Parameters after loading."""
    return hasattr(getattr(module, "quant_method", None), "process_weights_after_loading")


def _linear_method_type() -> type:
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod

    return UnquantizedLinearMethod


def _check_linear(module: Any, target: Target, tensors: Mapping[str, Any]) -> None:
    """Raise unless the parts fit the served linear layer exactly (TP 1, unquantised, same shapes)."""
    if not isinstance(getattr(module, "quant_method", None), _linear_method_type()):
        raise DirectLoadUnsupported(f"{target.module}: quant method {type(module.quant_method).__name__}")
    if getattr(module, "tp_size", 1) != 1:
        raise DirectLoadUnsupported(f"{target.module}: tensor parallel size {module.tp_size}")
    sizes = list(getattr(module, "output_partition_sizes", [module.output_size_per_partition]))
    if len(sizes) != len(target.parts):
        raise DirectLoadUnsupported(f"{target.module}: {len(sizes)} output parts, checkpoint gives "
                                    f"{len(target.parts)}")
    if target.param == "bias" and module._parameters.get("bias") is None:
        raise DirectLoadUnsupported(f"{target.module}: checkpoint has a bias, the served layer none")
    cols = module.input_size_per_partition
    for name, rows in zip(target.parts, sizes):
        want = (rows, cols) if target.param == "weight" else (rows,)
        if tuple(tensors[name].shape) != want:
            raise DirectLoadUnsupported(f"{name}: shape {tuple(tensors[name].shape)}, served part is {want}")


def direct_load(model: Any, tensors: Mapping[str, Any]) -> dict[str, int]:
    """Load `tensors` (checkpoint names) into the CPU-served `model` in place; returns counts.

    Raises DirectLoadUnsupported before changing anything when the model is not one this
    path understands (the caller then uses vLLM's reload)."""
    import torch

    modules = dict(model.named_modules())
    targets = plan_direct_load(list(tensors), getattr(model, "packed_modules_mapping", {}) or {})
    linear, copied = [], []
    for t in targets:  # check everything first: a half-applied load would serve mixed weights
        module = modules.get(t.module)
        if module is None:
            raise DirectLoadUnsupported(f"{t.module}: no such module in the served model (renamed checkpoint?)")
        if isinstance(getattr(module, "quant_method", None), _linear_method_type()):
            _check_linear(module, t, tensors)
            linear.append((module, t))
            continue
        if t.packed:
            raise DirectLoadUnsupported(f"{t.module}: packed parameter on a non-linear layer")
        param = module._parameters.get(t.param)
        (name,) = t.parts
        if param is None or tuple(param.shape) != tuple(tensors[name].shape):
            served = None if param is None else tuple(param.shape)
            raise DirectLoadUnsupported(f"{name}: shape {tuple(tensors[name].shape)}, served {served} "
                                        "(padded vocabulary?)")
        copied.append((module, param, tensors[name]))

    # layers whose kernel is built from a copied Parameter, including those that share it
    # (a tied output head has no checkpoint tensor of its own but serves the embedding)
    users = parameter_users(modules.values())
    reprocess = {id(m): m for _, param, _ in copied for m in users.get(id(param), []) if has_kernel(m)}

    with torch.no_grad():
        for _, param, tensor in copied:
            param.copy_(tensor)
        for module, t in linear:  # biases first: a layer's kernel is built once its bias is in
            if t.param == "bias":
                module._parameters["bias"].copy_(torch.cat([tensors[n] for n in t.parts]))
        for module, t in linear:
            if t.param != "weight":
                continue
            # a fresh tensor, never a view: the inputs may be pages the next load overwrites,
            # and a kernel may keep the weight's memory instead of packing a copy
            parts = [tensors[n] for n in t.parts]
            fused = torch.cat(parts, dim=0) if t.packed else parts[0].clone(memory_format=torch.contiguous_format)
            module.weight = torch.nn.Parameter(fused.to(module.weight.dtype), requires_grad=False)
            module.quant_method.process_weights_after_loading(module)
        for module in reprocess.values():
            module.quant_method.process_weights_after_loading(module)
    return {"linear": sum(1 for _, t in linear if t.param == "weight"), "copied": len(copied),
            "reprocessed": len(reprocess)}
