"""Process-group environment for a learner that is not started by a launcher.

`deepspeed.initialize` reads RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; when
they are missing it falls back to MPI discovery and fails without mpi4py. A learner
started by Ray, a test or a script sets them here (loopback, a free port) instead.
Values that a launcher (torchrun, the deepspeed launcher, a Ray actor) already set are
kept, so the same code runs single-process and multi-rank.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int
    backend: str  # "gloo" on CPU, "nccl" on CUDA


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def ensure_dist_env(
    rank: int | None = None,
    world_size: int | None = None,
    master_addr: str | None = None,
    master_port: int | None = None,
) -> DistEnv:
    """Fill in the launcher variables that are missing and return what is in effect.

    Explicit arguments override the environment; otherwise existing variables win, then
    single-process defaults (rank 0 of 1 on loopback with a free port).
    """
    r = rank if rank is not None else _int_env("RANK", 0)
    ws = world_size if world_size is not None else _int_env("WORLD_SIZE", 1)
    if ws < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {ws}")
    if not 0 <= r < ws:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={ws}), got {r}")
    local = r if rank is not None else _int_env("LOCAL_RANK", r)
    addr = master_addr or os.environ.get("MASTER_ADDR") or "127.0.0.1"
    if master_port is not None:
        port = master_port
    else:
        port = _int_env("MASTER_PORT", 0) or free_port(addr)
    os.environ.update(
        RANK=str(r), LOCAL_RANK=str(local), WORLD_SIZE=str(ws), MASTER_ADDR=addr, MASTER_PORT=str(port)
    )
    os.environ.setdefault("LOCAL_WORLD_SIZE", str(ws))
    return DistEnv(r, local, ws, addr, port, backend=default_backend())


def claim_single_rank_env() -> DistEnv:
    """Rank 0 of 1 on loopback with a port of its own, whatever the process inherited.

    A Ray actor inherits the environment of whoever started Ray; a driver that ran a
    learner itself (a notebook, a test) leaves MASTER_PORT pointing at a port its own
    process group still holds, and the actor's rendezvous then dies with EADDRINUSE.
    """
    return ensure_dist_env(rank=0, world_size=1, master_addr="127.0.0.1", master_port=free_port())


def default_backend() -> str:
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed() -> DistEnv:
    """Set the environment (if needed) and start DeepSpeed's process group once per process."""
    if not _has_cuda():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    env = ensure_dist_env()
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized() and env.world_size == 1:
        # One rank needs no rendezvous: an in-memory store instead of the TCPStore that
        # env:// starts on MASTER_PORT, which listens on every interface (`::`), whatever
        # MASTER_ADDR says; on a node of a multi-node run that is a socket open to the network.
        dist.init_process_group(backend=env.backend, store=dist.HashStore(), rank=0, world_size=1)
    if not dist.is_initialized() or not _deepspeed_comm_ready():
        deepspeed.init_distributed(dist_backend=env.backend, auto_mpi_discovery=False)
    return env


def _deepspeed_comm_ready() -> bool:
    from deepspeed import comm

    return comm.is_initialized()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
