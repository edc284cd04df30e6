"""Weight-sync strategies by name: the config's choices, the zmq pair unchanged, CUDA engine args."""

from __future__ import annotations

import typing

import pytest
import torch

from peirce.config.schema import TrainConfig, WeightSyncConfig
from peirce.registry import UnknownNameError
from peirce.rollout.weights_inbox import WeightsInbox
from peirce.transport import strategies
from peirce.transport.weight_sync import WeightPublisher, WeightReceiver, WeightSender


def test_every_configurable_strategy_is_registered_and_nothing_else():
    choices = typing.get_args(WeightSyncConfig.model_fields["strategy"].annotation)
    assert sorted(choices) == strategies.STRATEGIES.names() == ["auto", "cuda_ipc", "nccl", "shm", "zmq"]
    assert WeightSyncConfig().strategy == "auto"


def test_an_unknown_strategy_names_the_valid_ones():
    with pytest.raises(UnknownNameError, match="unknown weight-sync strategy 'ncl'; valid: auto, cuda_ipc, nccl, shm, zmq; "
                                               "did you mean 'nccl'"):
        strategies.get("ncl")


def test_zmq_strategy_builds_todays_publisher_and_inbox_and_a_version_arrives_exactly():
    cfg = TrainConfig.model_validate({"transport": {"bucket_mb": 0.01}})
    zmq_sync = strategies.get("zmq")
    assert zmq_sync.engine_kwargs == {} and zmq_sync.engine_env == {}
    sender = zmq_sync.sender(cfg, "127.0.0.1", None)
    box = zmq_sync.inbox(sender.endpoint, "w0", 0, None, engine=None, on_weights=None)
    try:
        assert isinstance(sender, WeightPublisher) and isinstance(sender, WeightSender)
        assert isinstance(box, WeightsInbox) and sender.bucket_bytes == int(0.01 * 2**20)
        state = {"a.weight": torch.arange(12.0).reshape(3, 4), "b.weight": torch.ones(5000)}
        deadline = 50
        while not sender.subscribers and deadline:
            deadline -= 1
            box.wait_for(99, 0.1)
        stats = sender.publish(state, 1)
        assert stats.acked == ["w0"] and stats.n_buckets > 1
        assert box.wait_for(1, 10)
        version, tensors = box.take()
        assert version == 1 and {k: torch.equal(v, state[k]) for k, v in tensors} == {"a.weight": True, "b.weight": True}
    finally:
        box.close()
        sender.close()


@pytest.mark.parametrize("name, backend, env", [("nccl", "nccl", {}),
                                                 ("cuda_ipc", "ipc", {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"})])
def test_cuda_strategies_configure_vllms_weight_transfer(name, backend, env):
    s = strategies.get(name)
    assert s.engine_kwargs == {"weight_transfer_config": {"backend": backend}} and s.engine_env == env


def test_a_cuda_inbox_needs_its_engine():
    with pytest.raises(ValueError, match="engine is required"):
        strategies.get("nccl").inbox("tcp://127.0.0.1:1", "w", 0, None, engine=None)


def test_the_cuda_sender_is_a_weight_sender():
    from peirce.transport.cuda_sync import CudaWeightSender

    s = CudaWeightSender("nccl", "tcp://127.0.0.1:*", trainer_factory=lambda *a: None)
    try:
        assert isinstance(s, WeightSender) and s.endpoint.startswith("tcp://127.0.0.1:")
        assert s.publish({"w": torch.ones(2)}, 1).sent_to == []  # nobody registered: nothing to wait for
    finally:
        s.close()
    assert not isinstance(s, WeightReceiver)


@pytest.mark.vllm
def test_cuda_strategies_speak_the_installed_vllm_weight_transfer_api():
    """What can be checked of vLLM's CUDA engines without CUDA: the init infos peirce builds,
    the worker-side payload each member gets, and the weight source it hands to vLLM."""
    from dataclasses import asdict

    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory
    from vllm.distributed.weight_transfer.nccl_common import NCCLWeightTransferInitInfo, worker_init_payload

    from peirce.transport.cuda_control import member_init_info
    from peirce.transport.cuda_sync import _StateHolder, dict_source, trainer_init_info

    nccl = trainer_init_info("nccl", "127.0.0.1", 2, packed=True, nccl_port=29511)
    assert (nccl.backend, nccl.is_sender, nccl.world_size, nccl.master_port) == ("nccl", True, 3, 29511)
    worker = worker_init_payload(NCCLWeightTransferInitInfo(master_address="127.0.0.1", master_port=29511,
                                                            rank_offset=1, world_size=3, packed=True))
    assert [NCCLWeightTransferInitInfo(**member_init_info(worker, i)).rank_offset for i in range(2)] == [1, 2]
    ipc = trainer_init_info("cuda_ipc", "127.0.0.1", 1, packed=False)
    assert (ipc.backend, asdict(ipc)["packed"]) == ("ipc", False)
    for backend in ("nccl", "ipc"):  # the names strategies.py configures engines with
        assert backend in WeightTransferEngineFactory._registry and backend in WeightTransferTrainerFactory._registry
    holder = _StateHolder({"model.layers.0.w": torch.ones(2, 3, dtype=torch.bfloat16), "model.norm.w": torch.ones(3)})
    source = dict_source(holder)
    assert [(m.name, m.dtype, m.shape) for m in source.metadata()] == [
        ("model.layers.0.w", torch.bfloat16, (2, 3)), ("model.norm.w", torch.float32, (3,))]
    assert [n for n, _ in source] == list(holder.state) and [g for g, _ in source.iter_groups()] == [
        ["model.layers.0.w"], ["model.norm.w"]]
    # the engine-side calls EngineTarget makes exist on vLLM's LLM with the argument shapes it passes
    import inspect

    from vllm import LLM

    for method, params in (("init_weight_transfer_engine", ["request"]), ("start_weight_update", []),
                           ("update_weights", ["request"]), ("finish_weight_update", ["weight_version"]),
                           ("shutdown_weight_transfer_engine", []), ("reset_prefix_cache", None)):
        sig = inspect.signature(getattr(LLM, method))
        assert params is None or list(sig.parameters)[1:] == params, (method, sig)
