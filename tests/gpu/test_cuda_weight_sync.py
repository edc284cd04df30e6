"""The CUDA weight-sync strategies for real: vLLM's weight-transfer engines (CUDA IPC, NCCL)
moving learner tensors into a CUDA vLLM engine, driven over the ZeroMQ control plane.

Not run on the CPU machine these were written on (no GPU there): the first GPU run is
their first run. Each builds a tiny-Llama engine with `weight_transfer_config`, publishes
perturbed weights from CUDA tensors in this process, and checks that the engine then
scores a fixed sequence as transformers does on those weights, and that the version,
ACK and generation lock behave as on CPU (tests/transport/test_cuda_sync_control.py).
NCCL refuses two ranks on one device, so the NCCL test needs two GPUs.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from test_cuda_paths import PROMPT, RELATIVE, RESPONSE, TOLERANCE, max_gap, reference_logprobs

CUDA = torch.cuda.is_available()

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: (v.float() + max(0.5 * v.float().std().item(), 0.3) * torch.randn(v.shape, generator=g)).to(v.dtype)
            if v.dim() > 1 else v for k, v in state.items()}


def sync_and_check(strategy: str, model_dir, device: str, engine_env: dict[str, str]) -> None:
    from safetensors.torch import load_file

    from peirce.rollout.cuda_weight_transfer import CudaWeightsInbox, EngineTarget
    from peirce.rollout.engine import RolloutEngine
    from peirce.transport import strategies
    from peirce.transport.cuda_sync import CudaWeightSender

    sync = strategies.get(strategy)
    saved = {k: os.environ.get(k) for k in engine_env}
    os.environ.update(engine_env)
    try:
        engine = RolloutEngine(model_dir, dtype="bfloat16", max_model_len=256, seed=0, kv_cache_gib=1,
                               gpu_memory_utilization=0.25, enforce_eager=True, **sync.engine_kwargs)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    state = load_file(str(model_dir / "model.safetensors"))
    base = engine.sequence_logprobs(PROMPT, RESPONSE)
    sender = CudaWeightSender(strategy, "tcp://127.0.0.1:*", ack_timeout=120.0)
    inbox = CudaWeightsInbox(sender.endpoint, f"{strategy}-engine", EngineTarget(engine))
    try:
        for version, seed in ((1, 11), (2, 12)):  # the second publish reuses the group
            moved = perturbed(state, seed)
            on_gpu = {k: v.to(device, torch.bfloat16) for k, v in moved.items()}
            deadline = 50
            while not sender.subscribers and deadline:
                deadline -= 1
                inbox.wait_for(99, 0.1)
            stats = sender.publish(on_gpu, version)
            assert stats.acked == [f"{strategy}-engine"] and not stats.evicted, stats
            assert engine.policy_version == version and inbox.received_version == version
            got, want = engine.sequence_logprobs(PROMPT, RESPONSE), reference_logprobs(model_dir, moved)
            ref_moved = max_gap(want, base)
            assert ref_moved > 5 * TOLERANCE, f"perturbation too small to test ({ref_moved:.4f})"
            assert max_gap(got, want) < TOLERANCE + RELATIVE * ref_moved, (got[:4], want[:4])
        assert sender.plan.formed == 1 and not engine._lock.locked()
        print(json.dumps({"bench": "gpu_weight_sync", "metric": f"{strategy}_publish_seconds",
                          "value": round(stats.seconds, 4), "unit": "s", "mb": round(stats.payload_bytes / 2**20, 2)}))
    finally:
        inbox.close()
        sender.close()
        engine.close()


def test_cuda_ipc_moves_learner_tensors_into_the_engine_on_one_gpu(tiny_model_dir):
    sync_and_check("cuda_ipc", tiny_model_dir, "cuda:0", {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"})


@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2,
                    reason="NCCL needs the learner and the engine on two GPUs (it refuses two ranks on one device)")
def test_nccl_broadcasts_learner_tensors_into_an_engine_on_another_gpu(tiny_model_dir):
    # the engine's worker process sees only GPU 1; this process (the learner) sends from GPU 0
    sync_and_check("nccl", tiny_model_dir, "cuda:0", {"CUDA_VISIBLE_DEVICES": "1"})
