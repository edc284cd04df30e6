"""Methods mixed into every vLLM worker (`worker_extension_cls`) for in-place weight updates.

vLLM runs the model in a separate worker process, so new weights must cross a process
boundary. `peirce_reload_from_file` takes a path to a safetensors file in shared memory
(/dev/shm): the engine process writes the bytes once, the worker memory-maps them and
copies each tensor straight into the model, and only the short path travels over
vLLM's RPC. `peirce_reload_tensors` takes the tensors inside the RPC instead (vLLM
serialises them twice: client -> engine core (msgpack) -> worker (pickle), and the
tensors it decodes in between are memoryview-backed and cannot be pickled again, so they
travel as raw bytes plus dtype and shape); it is kept as the baseline.

Both go through `reload_weights`, which accepts checkpoint-format names (q_proj, k_proj
... rather than the fused qkv_proj) and re-runs the CPU backend's repacking;
`model.load_weights` after start-up fails on CPU for that reason.

This module must stay importable without vLLM: the worker resolves it by qualified name.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any


def _iter_safetensors(path: str) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        for name in f.keys():
            yield name, f.get_tensor(name)


class PeirceWorkerExtension:
    """Mixed into vLLM's Worker: `self.reload_weights` and `self.model_runner` exist there."""

    def _peirce_reload(self, weights: Iterable[tuple[str, Any]]) -> float:
        t0 = time.perf_counter()
        self.reload_weights(weights_iterator=iter(weights))  # type: ignore[attr-defined]
        return time.perf_counter() - t0

    def peirce_reload_from_file(self, path: str) -> float:
        """Load every tensor of a safetensors file in place; returns the worker-side seconds."""
        return self._peirce_reload(_iter_safetensors(path))

    def peirce_reload_tensors(self, raw: list[tuple[str, str, list[int], bytes]]) -> float:
        """Load (name, dtype, shape, bytes) items that arrived inside the RPC; returns worker seconds."""
        import torch

        def tensors() -> Iterator[tuple[str, Any]]:
            for name, dtype, shape, data in raw:
                flat = torch.frombuffer(bytearray(data), dtype=getattr(torch, dtype))
                yield name, flat.view(shape)

        return self._peirce_reload(tensors())

    def peirce_param_digest(self) -> dict[str, float]:
        """Float64 sum of every model parameter, by name: lets tests see that a load landed."""
        import torch

        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        with torch.no_grad():
            return {n: float(p.detach().to(torch.float64).sum()) for n, p in model.named_parameters()}
