"""Weight-broadcast throughput: WeightPublisher -> WeightSubscriber vs raw ZeroMQ PUSH/PULL.

A SmolLM2-135M-shaped state dict of random bf16 tensors (~270 MB; `--quick`: 4 layers
and a 8k vocab, ~38 MB) is published over tcp://127.0.0.1 to one subscriber thread.
`publish_e2e` times the whole `publish()` call (pack into buckets with checksums, send,
subscriber verifies every checksum and ACKs); `publish_wire` leaves out packing.
The baseline sends one buffer of the same size over a bare PUSH/PULL pair (zero-copy
both ends, no checksum, no handshake): the ceiling for any protocol on this socket.
Then a bucket-size sweep. Medians over repeats; the machine may be shared, so compare
ratios rather than absolute numbers.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, parse_args  # noqa: E402

BENCH = "transport"
MIB = 1 << 20


def smollm2_like(n_layers: int, vocab: int, hidden: int = 576, kv: int = 192, inter: int = 1536):
    """Random bf16 tensors with SmolLM2-135M's names and shapes (30 layers, vocab 49152)."""
    import torch

    g = torch.Generator().manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32).to(torch.bfloat16)

    sd = {"model.embed_tokens.weight": rnd(vocab, hidden)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        sd |= {
            p + "self_attn.q_proj.weight": rnd(hidden, hidden), p + "self_attn.k_proj.weight": rnd(kv, hidden),
            p + "self_attn.v_proj.weight": rnd(kv, hidden), p + "self_attn.o_proj.weight": rnd(hidden, hidden),
            p + "mlp.gate_proj.weight": rnd(inter, hidden), p + "mlp.up_proj.weight": rnd(inter, hidden),
            p + "mlp.down_proj.weight": rnd(hidden, inter),
            p + "input_layernorm.weight": rnd(hidden), p + "post_attention_layernorm.weight": rnd(hidden),
        }
    sd["model.norm.weight"] = rnd(hidden)
    return sd


def raw_push_pull_seconds(nbytes: int, repeats: int) -> float:
    """Median seconds to move one `nbytes` buffer PUSH -> PULL (received, zero-copy)."""
    import numpy as np
    import zmq

    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    buf = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    times = []
    for _ in range(repeats + 1):  # first round warms the connection
        got = threading.Event()

        def receive():
            frames = pull.recv_multipart(copy=False)
            assert frames[0].buffer.nbytes == nbytes
            got.set()

        t = threading.Thread(target=receive)
        t.start()
        t0 = time.perf_counter()
        push.send_multipart([buf], copy=False)
        got.wait()
        times.append(time.perf_counter() - t0)
        t.join()
    push.close(linger=0)
    pull.close(linger=0)
    return statistics.median(times[1:])


def publish_seconds(sd, bucket_bytes: int, repeats: int) -> tuple[float, float, int, int]:
    """Median (end-to-end, wire-only) seconds of publishing `sd` to one subscriber."""
    from peirce.transport.weight_sync import WeightPublisher, WeightSubscriber

    stop = threading.Event()
    received: list[int] = []
    with WeightPublisher(bucket_bytes=bucket_bytes, ack_timeout=120) as pub:

        def engine():
            sub = WeightSubscriber(pub.endpoint, name="bench-engine")
            while not stop.is_set():
                got = sub.receive(timeout=0.2)
                if got is not None:
                    version, tensors = got
                    n = sum(t.numel() for _, t in tensors)  # materialise every view
                    received.append(n)
            sub.close()

        t = threading.Thread(target=engine, daemon=True)
        t.start()
        while not pub.subscribers:
            time.sleep(0.01)
        stats = [pub.publish(sd, version=v) for v in range(repeats + 1)][1:]  # v0 warms up
        stop.set()
        t.join(timeout=30)
    n_params = sum(v.numel() for v in sd.values())
    assert all(s.acked == ["bench-engine"] for s in stats), [s.evicted for s in stats]
    assert received and all(n == n_params for n in received), "subscriber did not get every tensor"
    e2e = statistics.median(s.pack_seconds + s.seconds for s in stats)
    wire = statistics.median(s.seconds for s in stats)
    return e2e, wire, stats[0].payload_bytes, stats[0].n_buckets


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    if args.quick:
        sd, repeats, sweep = smollm2_like(4, 8192), 3, [1, 8, 64]
    else:
        sd, repeats, sweep = smollm2_like(30, 49152), 5, [1, 4, 16, 64, 256]
    nbytes = sum(v.numel() * v.element_size() for v in sd.values())
    mb = nbytes / 1e6
    emit(BENCH, "state_dict_size", round(mb, 1), "MB", n_tensors=len(sd))

    raw = raw_push_pull_seconds(nbytes, repeats)
    raw_mbs = mb / raw
    emit(BENCH, "raw_push_pull", round(raw_mbs, 1), "MB/s", seconds=round(raw, 4))

    default = 64
    e2e, wire, payload, n_buckets = publish_seconds(sd, default * MIB, repeats)
    emit(BENCH, "publish_e2e", round(mb / e2e, 1), "MB/s", baseline=round(raw_mbs, 1),
         seconds=round(e2e, 4), bucket_mib=default, n_buckets=n_buckets, padding_bytes=payload - nbytes)
    emit(BENCH, "publish_wire", round(mb / wire, 1), "MB/s", baseline=round(raw_mbs, 1),
         seconds=round(wire, 4), bucket_mib=default)

    for mib in sweep:
        e2e, wire, _, n_buckets = publish_seconds(sd, mib * MIB, repeats)
        emit(BENCH, f"publish_e2e_bucket_{mib}mib", round(mb / e2e, 1), "MB/s", baseline=round(raw_mbs, 1),
             seconds=round(e2e, 4), wire_seconds=round(wire, 4), n_buckets=n_buckets)


if __name__ == "__main__":
    main()
