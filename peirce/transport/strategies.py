"""Weight-sync strategies by name (`weight_sync.strategy`): the sender/inbox pair actors build.

Why a registry: the learner and rollout worker actors pick the pair by config instead of
constructing the ZeroMQ publisher and subscriber themselves, so a GPU run is not held to
TCP. Every strategy keeps ZeroMQ as the control plane and the `SubscriberBook` rules
(READY/ACK/NACK, eviction, probation, late joiners); they differ in how tensor bytes move:

* zmq      checksummed buckets over ZeroMQ (`WeightPublisher` / `WeightsInbox`), any two hosts;
* shm      the same buckets in /dev/shm files, ZeroMQ carrying only headers and file references
           (`peirce.transport.shm_sync`): learner and engines on one machine;
* auto     (the default) shm to the subscribers on the learner's machine, zmq to the others,
           per subscriber (the boot id its READY carries);
* nccl     vLLM's NCCL weight transfer, learner rank 0 broadcasting to the engine workers;
* cuda_ipc vLLM's CUDA IPC handles, when learner and engines share one GPU.

The CUDA ones import vLLM and CUDA code only when used (peirce.transport.cuda_sync,
peirce.rollout.cuda_weight_transfer).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from peirce.registry import Registry

if TYPE_CHECKING:
    from peirce.config.schema import TrainConfig
    from peirce.transport.security import RunKeys


class SenderFactory(Protocol):
    def __call__(self, cfg: TrainConfig, host: str, keys: RunKeys | None) -> Any: ...


class InboxFactory(Protocol):
    def __call__(self, endpoint: str, name: str, version: int, keys: RunKeys | None, *, engine: Any,
                 on_weights: Any) -> Any: ...


@dataclass(frozen=True)
class SyncStrategy:
    """How one strategy is built on each side.

    sender: the learner's `WeightSender` (it has `.endpoint`, `publish`, `close`).
    inbox: the rollout worker's inbox (`take`, `wait_for`, `close`), given its engine.
    engine_kwargs: extra `RolloutEngine` / vLLM `LLM` arguments the engine needs.
    engine_env: environment variables set before the engine starts (its worker processes).
    """

    name: str
    sender: SenderFactory
    inbox: InboxFactory
    engine_kwargs: dict[str, Any]
    engine_env: dict[str, str]

    def prepare_engine_env(self) -> None:
        for key, value in self.engine_env.items():
            os.environ[key] = value


STRATEGIES: Registry[SyncStrategy] = Registry("weight-sync strategy")


def get(name: str) -> SyncStrategy:
    """The strategy registered as `name` (UnknownNameError lists the valid ones)."""
    return STRATEGIES.get(name)


def _register(strategy: SyncStrategy) -> None:
    STRATEGIES.register(strategy.name)(strategy)


# -- zmq / shm / auto: ZeroMQ buckets, the bytes over TCP, in /dev/shm, or each where it fits --------

def _bucket_pair(name: str, publisher: str, subscriber: str) -> SyncStrategy:
    """A strategy whose sender is `peirce.transport.<publisher>` and whose inbox is a
    `WeightsInbox` over `peirce.transport.<subscriber>` (module.Class names)."""

    def sender(cfg: TrainConfig, host: str, keys: RunKeys | None) -> Any:
        cls = _load(publisher)
        return cls(f"tcp://{host}:*", bucket_bytes=int(cfg.transport.bucket_mb * 2**20), keys=keys)

    def inbox(endpoint: str, name: str, version: int, keys: RunKeys | None, *, engine: Any = None,
              on_weights: Any = None) -> Any:
        from peirce.rollout.weights_inbox import WeightsInbox

        return WeightsInbox(endpoint, name, version, keys, subscriber=_load(subscriber))

    return SyncStrategy(name, sender, inbox, engine_kwargs={}, engine_env={})


def _load(qualified: str) -> Any:
    module, cls = qualified.rsplit(".", 1)
    return getattr(importlib.import_module(f"peirce.transport.{module}"), cls)


_register(_bucket_pair("zmq", "weight_sync.WeightPublisher", "weight_sync.WeightSubscriber"))
_register(_bucket_pair("shm", "shm_sync.ShmWeightPublisher", "shm_sync.ShmWeightSubscriber"))
_register(_bucket_pair("auto", "shm_sync.AutoWeightPublisher", "shm_sync.AutoWeightSubscriber"))


# -- nccl / cuda_ipc: ZeroMQ control, vLLM's weight-transfer engine for the bytes ---------------

def _cuda_sender(strategy: str) -> SenderFactory:
    def build(cfg: TrainConfig, host: str, keys: RunKeys | None) -> Any:
        from peirce.transport.cuda_sync import CudaWeightSender

        ws = cfg.weight_sync
        return CudaWeightSender(strategy, f"tcp://{host}:*", packed=ws.packed, nccl_port=ws.nccl_port, keys=keys)

    return build


def _cuda_inbox(endpoint: str, name: str, version: int, keys: RunKeys | None, *, engine: Any,
                on_weights: Any = None) -> Any:
    from peirce.rollout.cuda_weight_transfer import CudaWeightsInbox, EngineTarget

    if engine is None:
        raise ValueError("a CUDA weight-sync inbox applies weights to its engine: engine is required")
    if engine.policy_version != version:
        raise ValueError(f"start version {version} differs from the engine's {engine.policy_version}")
    return CudaWeightsInbox(endpoint, name, EngineTarget(engine), on_weights=on_weights, keys=keys)


for _name, _backend in (("nccl", "nccl"), ("cuda_ipc", "ipc")):
    _register(SyncStrategy(_name, _cuda_sender(_name), _cuda_inbox,
                           engine_kwargs={"weight_transfer_config": {"backend": _backend}},
                           engine_env={"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"} if _name == "cuda_ipc" else {}))
