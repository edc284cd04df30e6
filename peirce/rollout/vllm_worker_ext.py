"""Methods mixed into every vLLM worker (`worker_extension_cls`) for in-place weight updates.

vLLM runs the model in a separate worker process, so new weights must cross a process
boundary. `peirce_reload_raw` takes a path to a raw staging file in shared memory
(/dev/shm, `peirce.rollout.shm_stage`) plus its small tensor table: the engine process
writes the bytes once into pages it reuses every load, the worker memory-maps them and
copies each tensor straight into the model, and only the path and table travel over
vLLM's RPC. `peirce_reload_from_file` does the same for a ready safetensors file.
`peirce_reload_tensors` takes the tensors inside the RPC instead (vLLM serialises them
twice: client -> engine core (msgpack) -> worker (pickle), and the tensors it decodes
in between are memoryview-backed and cannot be pickled again, so they travel as raw
bytes plus dtype and shape); it is kept as the baseline.

On CPU every load first tries `peirce.rollout.direct_load` (fused weights straight into
each linear layer's kernel builder: about 0.65x the time of vLLM's layerwise reload on
SmolLM2); it refuses, before touching anything, a model it does not understand, and then,
as on CUDA, the load goes through `reload_weights`, which accepts checkpoint-format names
(q_proj, k_proj ... rather than the fused qkv_proj) and re-runs the CPU backend's
repacking; `model.load_weights` after start-up fails on CPU for that reason.

Tied weights need one more step. With `tie_word_embeddings` the output head shares the
embedding's Parameter, so the checkpoint has no `lm_head.weight` and vLLM's layerwise
reload processes only the embedding layer: the head "fails to load" (vLLM's warning)
and keeps the kernel it built at start-up. On CPU that kernel is a *packed copy* of the
weight (oneDNN / sgl `convert_weight_packed`, chosen on AVX512-BF16/AMX and for fp32),
so the head kept serving the old embedding: measured 3.5 nats between engine and
transformers after an embedding-only change on an AVX512-BF16 host, invisible on AVX2
bf16, where the head multiplies the shared tensor directly. `_refresh_shared_kernels`
re-runs `process_weights_after_loading` on every layer that shares a weight Parameter
with another, so the packed head is rebuilt from the new values (the direct load does the
same for every layer that reads a Parameter it copied into); on CUDA it is a no-op
(the shared tensor is used as is). The warning it leaves is logged once, explained.

This module must stay importable without vLLM: the worker resolves it by qualified name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("vllm.peirce_worker_ext")  # under "vllm": the worker process has its handler

# vLLM's layerwise reload warns "<Layer>: Failed to load weights" for every layer the
# checkpoint has no tensor for: the tied head (rebuilt by `_refresh_shared_kernels`) and
# the rotary embedding (no weights at all). Both are expected here, so the filter keeps
# them off the console after one explanation in the worker's log.
_EXPECTED_UNLOADED = ("ParallelLMHead", "RotaryEmbedding")


class _ExpectedReloadWarnings(logging.Filter):
    explained = False

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not msg.endswith("Failed to load weights") or not msg.startswith(_EXPECTED_UNLOADED):
            return True
        if not _ExpectedReloadWarnings.explained:
            _ExpectedReloadWarnings.explained = True
            log.info("in-place reload: vLLM reports the tied output head and the rotary embedding as "
                     "'Failed to load weights'; expected (no checkpoint tensors of their own), and peirce "
                     "rebuilds the tied head's kernel from the new embedding; further such warnings are muted")
        return False


def _install_reload_filter() -> None:
    target = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    if not any(isinstance(f, _ExpectedReloadWarnings) for f in target.filters):
        target.addFilter(_ExpectedReloadWarnings())


def _refresh_shared_kernels(model: Any) -> int:
    """Rebuild the kernels of layers whose weight Parameter is shared (a tied head); returns
    how many layers were rebuilt. See the module docstring for why."""
    from peirce.rollout.direct_load import has_kernel, parameter_users

    rebuilt = 0
    for modules in parameter_users(model.modules()).values():
        if len(modules) < 2:
            continue
        for module in modules:
            if has_kernel(module):
                module.quant_method.process_weights_after_loading(module)
                rebuilt += 1
    return rebuilt


def _iter_safetensors(path: str) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        for name in f.keys():
            yield name, f.get_tensor(name)


class PeirceWorkerExtension:
    """Mixed into vLLM's Worker: `self.reload_weights` and `self.model_runner` exist there."""

    def _peirce_reload(self, weights: Iterable[tuple[str, Any]], direct: bool = True) -> float:
        """`direct`: on CPU, try `peirce.rollout.direct_load` first (about 0.65x the time of
        vLLM's layerwise reload plus the tied-head rebuild on SmolLM2); it refuses, before touching anything, a model it does not
        understand, and vLLM's reload runs instead. Which path ran is in the breakdown."""
        import torch
        from vllm.platforms import current_platform

        t0 = time.perf_counter()
        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        if direct and current_platform.is_cpu():
            from peirce.rollout.direct_load import DirectLoadUnsupported, direct_load

            tensors = dict(weights)
            try:
                direct_load(model, tensors)
                total = time.perf_counter() - t0
                self.peirce_last_reload = {"direct_s": total, "path": "direct"}
                return total
            except DirectLoadUnsupported as exc:
                if not getattr(self, "peirce_direct_refused", None):
                    log.warning("direct in-place load not possible for this model (%s); using vLLM's "
                                "reload_weights (slower)", exc)
                self.peirce_direct_refused = str(exc)
                weights = tensors.items()
        _install_reload_filter()
        self.reload_weights(weights_iterator=iter(weights))  # type: ignore[attr-defined]
        t1 = time.perf_counter()
        with torch.no_grad():
            _refresh_shared_kernels(model)
        t2 = time.perf_counter()
        self.peirce_last_reload = {"reload_s": t1 - t0, "shared_kernels_s": t2 - t1, "path": "vllm"}
        return t2 - t0

    def peirce_reload_breakdown(self) -> dict[str, Any]:
        """The last in-place load's path ("direct" or "vllm") and the seconds of its parts
        (direct load; or vLLM's reload_weights and the tied-kernel rebuild)."""
        return dict(getattr(self, "peirce_last_reload", {}))

    def peirce_reload_from_file(self, path: str, direct: bool = True) -> float:
        """Load every tensor of a safetensors file in place; returns the worker-side seconds."""
        return self._peirce_reload(_iter_safetensors(path), direct)

    def peirce_reload_raw(self, path: str, table: list, direct: bool = True) -> float:
        """Load every tensor of a raw staging file (`peirce.rollout.shm_stage`) as views of
        its mapping, in `table` order; returns the worker-side seconds."""
        from peirce.rollout.shm_stage import raw_tensors

        return self._peirce_reload(raw_tensors(path, table), direct)

    def peirce_reload_tensors(self, raw: list[tuple[str, str, list[int], bytes]], direct: bool = True) -> float:
        """Load (name, dtype, shape, bytes) items that arrived inside the RPC; returns worker seconds."""
        import torch

        def tensors() -> Iterator[tuple[str, Any]]:
            for name, dtype, shape, data in raw:
                flat = torch.frombuffer(bytearray(data), dtype=getattr(torch, dtype))
                yield name, flat.view(shape)

        return self._peirce_reload(tensors(), direct)

    def peirce_param_digest(self) -> dict[str, float]:
        """Float64 sum of every model parameter, by name: lets tests see that a load landed."""
        import torch

        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        with torch.no_grad():
            return {n: float(p.detach().to(torch.float64).sum()) for n, p in model.named_parameters()}
