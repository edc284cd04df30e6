"""Weight sync for SmolLM2-135M: learner-side publish -> ZeroMQ buckets -> subscriber ->
in-place load into a running vLLM engine, vs vLLM's own in-place reload of an in-memory
state dict (collective_rpc carrying the tensors). Median of repeats; ratio = ours / vLLM
(goal: at most 2x). Also wire MB/s of the broadcast vs raw ZeroMQ is in bench_transport."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, parse_args  # noqa: E402


def main() -> None:
    args = parse_args(__doc__)
    import torch
    from safetensors.torch import load_file

    from peirce.model.embedded import prepare_embedded_model
    from peirce.rollout.engine import RolloutEngine
    from peirce.transport.weight_sync import WeightPublisher, WeightSubscriber

    model_dir = prepare_embedded_model()
    state = load_file(str(model_dir / "model.safetensors"))
    repeats = 2 if args.quick else 5
    engine = RolloutEngine(model_dir, max_model_len=256, seed=0)
    try:
        baseline = []
        for i in range(repeats):
            t0 = time.perf_counter()
            engine.load_weights(iter(state.items()), version=engine.policy_version + 1, via="rpc")
            baseline.append(time.perf_counter() - t0)
        ours = []
        with WeightPublisher() as pub:
            sub = WeightSubscriber(pub.endpoint, version=engine.policy_version)
            got: dict[int, list] = {}
            done = threading.Event()

            def receive(n: int) -> None:
                for _ in range(n):
                    version, tensors = sub.receive(timeout=120)
                    got[version] = list(tensors)
                    done.set()

            t = threading.Thread(target=receive, args=(repeats,), daemon=True)
            t.start()
            time.sleep(0.5)
            for _ in range(repeats):
                done.clear()
                version = engine.policy_version + 1
                t0 = time.perf_counter()
                pub.publish({k: v.to(torch.bfloat16) for k, v in state.items()}, version)
                done.wait(120)
                engine.load_weights(iter(got.pop(version)), version=version)
                ours.append(time.perf_counter() - t0)
            t.join(10)
            sub.close()
    finally:
        engine.close()
    med_ours, med_base = statistics.median(ours), statistics.median(baseline)
    emit("weight_sync", "vllm_inplace_reload_in_memory_s", round(med_base, 3), "s")
    emit("weight_sync", "broadcast_plus_inplace_load_s", round(med_ours, 3), "s", baseline=round(med_base, 3),
         mb=round(sum(v.numel() * 2 for v in state.values()) / 2**20, 1))


if __name__ == "__main__":
    main()
