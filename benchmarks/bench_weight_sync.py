"""Weight sync for SmolLM2-135M, end to end: learner-side publish -> ZeroMQ buckets ->
subscriber -> in-place load into a running vLLM engine, against three baselines for the
same bytes, all measured in this run (medians of repeats):

- vLLM's in-place reload of an in-memory state dict (collective_rpc carrying the tensors);
  ratio = ours / this (goal: at most 2x);
- vLLM's own `reload_weights` from the checkpoint folder (the files are in the page cache
  after the first read, so this is a memory-speed disk path, its best case);
- raw ZeroMQ: one buffer of the same size over a bare PUSH/PULL pair on 127.0.0.1
  (zero-copy, no checksum, no handshake, no load), the ceiling of the wire alone; it runs
  before vLLM starts so no engine process shares the CPUs with it.

Ours is timed after two untimed rounds (a learner publishes every step: its packing
buffers and the engine's /dev/shm staging file are reused), and one more line gives the
median seconds of each part: pack, send until the subscriber's ACK, the engine's write
into /dev/shm (it includes checking names and shapes), vLLM's `reload_weights` in the
worker, the tied head's kernel rebuild, and the RPC plus prefix-cache reset. Ours runs twice:
with the worker loading through peirce's direct CPU load (`peirce.rollout.direct_load`, the
default) and through vLLM's `reload_weights` (its fallback), so their ratio is measured in one run.

A third run moves the bytes through /dev/shm instead (`weight_sync.strategy: shm`, learner and
engine on one machine): the learner packs into its shared-memory arena, ZeroMQ carries only
headers, and the engine's worker loads straight from the learner's file; it is compared with
the disk reload, with the ZeroMQ broadcast and with raw ZeroMQ's GB/s.

Every path is also given in GB/s (state-dict bytes / seconds); `broadcast_plus_inplace_load_gb_per_s`
has raw ZeroMQ's GB/s as its baseline, so its ratio is the share of the wire ceiling reached.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # keep stdout for the JSON lines

from bench_transport import raw_push_pull_seconds  # noqa: E402
from common import emit, parse_args  # noqa: E402

BENCH = "weight_sync"


def _gb_per_s(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e9, 3)


def broadcast_and_load(engine, state: dict, repeats: int, warmup: int = 2,
                       strategy: str = "zmq") -> tuple[list[float], list[dict]]:
    """Seconds of publish -> receive -> in-place load per repeat, and where they went.

    `warmup` untimed rounds first: a learner publishes every step, so the steady state
    (packing buffers and the /dev/shm staging file already faulted in) is what counts.
    `strategy`: "zmq" (bytes over TCP) or "shm" (bytes in /dev/shm, loaded from there).
    """
    import torch

    from peirce.transport.shm_sync import ShmWeightPublisher, ShmWeightSubscriber
    from peirce.transport.weight_sync import WeightPublisher, WeightSubscriber

    publisher, subscriber = {"zmq": (WeightPublisher, WeightSubscriber),
                             "shm": (ShmWeightPublisher, ShmWeightSubscriber)}[strategy]
    ours, parts = [], []
    with publisher() as pub:
        sub = subscriber(pub.endpoint, version=engine.policy_version)
        got: dict[int, object] = {}
        done = threading.Event()

        def receive(n: int) -> None:
            for _ in range(n):
                version, payload = sub.receive(timeout=120)
                got[version] = payload if strategy == "shm" else list(payload)
                done.set()

        t = threading.Thread(target=receive, args=(warmup + repeats,), daemon=True)
        t.start()
        time.sleep(0.5)
        for i in range(warmup + repeats):
            done.clear()
            version = engine.policy_version + 1
            t0 = time.perf_counter()
            stats = pub.publish({k: v.to(torch.bfloat16) for k, v in state.items()}, version)
            t1 = time.perf_counter()
            done.wait(120)
            t2 = time.perf_counter()
            load = engine.load_received(got.pop(version), version=version)
            total = time.perf_counter() - t0
            if i < warmup:
                continue
            ours.append(total)
            worker = engine.reload_breakdown()
            parts.append({"pack": stats.pack_seconds, "send_until_ack": stats.seconds,
                          "receiver_after_ack": t2 - t1, "engine_shm_write": load.write_seconds,
                          "worker_direct_load": worker.get("direct_s", 0.0),
                          "worker_reload_weights": worker.get("reload_s", 0.0),
                          "worker_tied_kernel_refresh": worker.get("shared_kernels_s", 0.0),
                          "engine_rpc_and_prefix_cache_reset": load.seconds - load.write_seconds - load.worker_seconds})
        t.join(10)
        sub.close()
    return ours, parts


def main() -> None:
    args = parse_args(__doc__)
    import torch
    from safetensors.torch import load_file

    from peirce.model.embedded import prepare_embedded_model
    from peirce.rollout.engine import RolloutEngine

    model_dir = prepare_embedded_model()
    state = load_file(str(model_dir / "model.safetensors"))
    nbytes = sum(v.numel() * torch.bfloat16.itemsize for v in state.values())
    repeats = 2 if args.quick else 5
    raw = raw_push_pull_seconds(nbytes, repeats)
    engine = RolloutEngine(model_dir, max_model_len=256, seed=0)
    try:
        rpc, disk = [], []
        engine.direct_load = False  # the baselines are vLLM's own reload paths
        for _ in range(repeats):
            t0 = time.perf_counter()
            engine.load_weights(iter(state.items()), version=engine.policy_version + 1, via="rpc")
            rpc.append(time.perf_counter() - t0)
            disk.append(engine.reload_from_disk(engine.policy_version + 1))
        ours_vllm, parts_vllm = broadcast_and_load(engine, state, repeats)  # the worker loads via vLLM's reload
        engine.direct_load = True
        ours, parts = broadcast_and_load(engine, state, repeats)  # peirce's direct CPU load (the default)
        ours_shm, parts_shm = broadcast_and_load(engine, state, repeats, strategy="shm")  # bytes via /dev/shm
        if engine.on_cpu and engine.reload_breakdown().get("path") != "direct":
            raise RuntimeError(f"direct load refused: {engine.reload_breakdown()}")
    finally:
        engine.close()
    med = {"ours": statistics.median(ours), "ours_vllm": statistics.median(ours_vllm), "shm": statistics.median(ours_shm),
           "rpc": statistics.median(rpc), "disk": statistics.median(disk), "raw": raw}
    sizes = {"bytes": nbytes, "repeats": repeats}
    emit(BENCH, "vllm_inplace_reload_in_memory_s", round(med["rpc"], 3), "s",
         gb_per_s=_gb_per_s(nbytes, med["rpc"]), **sizes)
    emit(BENCH, "vllm_reload_from_checkpoint_folder_s", round(med["disk"], 3), "s",
         gb_per_s=_gb_per_s(nbytes, med["disk"]), page_cache="warm", **sizes)
    emit(BENCH, "raw_zmq_push_pull_s", round(med["raw"], 4), "s", gb_per_s=_gb_per_s(nbytes, med["raw"]),
         **sizes)
    emit(BENCH, "broadcast_plus_inplace_load_s", round(med["ours"], 3), "s", baseline=round(med["rpc"], 3),
         baseline_name="vLLM in-place reload, tensors inside collective_rpc", mb=round(nbytes / 2**20, 1),
         **sizes)
    emit(BENCH, "broadcast_plus_inplace_load_vs_disk_reload_s", round(med["ours"], 3), "s",
         baseline=round(med["disk"], 3), baseline_name="vLLM reload_weights from the checkpoint folder", **sizes)
    emit(BENCH, "broadcast_plus_inplace_load_breakdown_s", round(med["ours"], 3), "s",
         parts={k: round(statistics.median(p[k] for p in parts), 4) for k in parts[0]}, warmup_rounds=2, **sizes)
    emit(BENCH, "broadcast_plus_inplace_load_via_vllm_reload_s", round(med["ours_vllm"], 3), "s",
         parts={k: round(statistics.median(p[k] for p in parts_vllm), 4) for k in parts_vllm[0]},
         note="the same broadcast, the worker loading through vLLM's reload_weights (the path before the direct "
              "load, and its fallback)", **sizes)
    emit(BENCH, "inplace_load_direct_vs_vllm_reload_s", round(med["ours"], 3), "s", baseline=round(med["ours_vllm"], 3),
         baseline_name="the same broadcast with vLLM's reload_weights in the worker", **sizes)
    emit(BENCH, "broadcast_plus_inplace_load_gb_per_s", _gb_per_s(nbytes, med["ours"]), "GB/s",
         baseline=_gb_per_s(nbytes, med["raw"]), baseline_name="raw ZeroMQ PUSH/PULL, same bytes", **sizes)
    shm = {"strategy": "shm", "note": "learner and engine on one machine: bytes in /dev/shm, headers over ZeroMQ, "
                                      "the worker loads from the learner's file"}
    emit(BENCH, "shm_broadcast_plus_inplace_load_vs_disk_reload_s", round(med["shm"], 3), "s",
         baseline=round(med["disk"], 3), baseline_name="vLLM reload_weights from the checkpoint folder",
         parts={k: round(statistics.median(p[k] for p in parts_shm), 4) for k in parts_shm[0]}, **shm, **sizes)
    emit(BENCH, "shm_vs_zmq_broadcast_plus_inplace_load_s", round(med["shm"], 3), "s", baseline=round(med["ours"], 3),
         baseline_name="the same broadcast with the bytes over ZeroMQ (weight_sync.strategy zmq)", **shm, **sizes)
    emit(BENCH, "shm_broadcast_plus_inplace_load_gb_per_s", _gb_per_s(nbytes, med["shm"]), "GB/s",
         baseline=_gb_per_s(nbytes, med["raw"]), baseline_name="raw ZeroMQ PUSH/PULL, same bytes", **shm, **sizes)


if __name__ == "__main__":
    main()
