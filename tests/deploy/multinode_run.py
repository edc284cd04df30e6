"""A smoke run across a three-node Ray cluster on one machine; prints one JSON result line.

Run as its own process by test_multinode.py (a Ray driver joins one cluster per process, and
the slow suite's other tests keep a single-node runtime in theirs). Nodes: head 127.0.0.2
(the driver and the reward worker), 127.0.0.3 (the learner), 127.0.0.4 (the rollout
worker), pinned by custom resources; `transport.host: node` and `transport.auth: curve`.
While the run trains, an intruder without the run's keys says HELLO to the rollout
dispatcher. Ray refuses 127.0.0.1 as a node address of its own (it resolves it to the
interface address), hence .2-.4: all loopback.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

HEAD, LEARNER_NODE, ROLLOUT_NODE = "127.0.0.2", "127.0.0.3", "127.0.0.4"


def listening(pid: int) -> list[str]:
    """host:port of every TCP socket `pid` listens on."""
    import psutil

    return sorted(f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process(pid).net_connections(kind="tcp")
                  if c.status == psutil.CONN_LISTEN)


def main(run_root: str) -> dict:
    import ray
    import zmq
    from ray.cluster_utils import Cluster

    from peirce.actors.runtime import NODE_IP_ENV, ensure_ray
    from peirce.config import TrainConfig, load_config
    from peirce.config.profiles import SMOKE_TRAIN, as_overrides
    from peirce.trainer.orchestrator import Orchestrator
    from peirce.trainer.run_dir import RunDir
    from peirce.transport.dispatch import HELLO

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "node_ip_address": HEAD, "resources": {"head_node": 4}, "include_dashboard": False})
    cluster.add_node(num_cpus=2, node_ip_address=LEARNER_NODE, resources={"learner_node": 1})
    cluster.add_node(num_cpus=2, node_ip_address=ROLLOUT_NODE, resources={"rollout_node": 1})
    os.environ["RAY_ADDRESS"], os.environ[NODE_IP_ENV] = cluster.address, HEAD
    try:
        ensure_ray()
        values = {**SMOKE_TRAIN, "name": "multinode", "run_dir": f"{run_root}/multinode", "trainer.max_steps": 3,
                  "transport.host": "node", "transport.auth": "curve",
                  "learner.resources": {"learner_node": 1}, "rollout.resources": {"rollout_node": 1},
                  "reward.resources": {"head_node": 1}}
        cfg = load_config(TrainConfig, None, as_overrides(values))
        orch = Orchestrator(cfg, progress=False)
        intrusion: dict = {}

        def intruder() -> None:
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(orch.rollout_dispatch.endpoint)
            sock.send_multipart([HELLO, b"4"])
            intrusion["answered"] = bool(sock.poll(3000))
            sock.close(0)

        thread = threading.Thread(target=intruder, daemon=True)
        thread.start()
        rollout = next(iter(orch.rollout_pool.workers.values()))
        reward = next(iter(orch.reward_pool.workers.values()))
        pids = {"driver": os.getpid(), "learner": ray.get(orch.learner.pid.remote()),
                "rollout": ray.get(rollout.pid.remote()), "reward": ray.get(reward.pid.remote())}
        listens = {role: listening(pid) for role, pid in pids.items()}
        endpoints = {"rollout_dispatch": orch.rollout_dispatch.endpoint, "reward_dispatch": orch.reward_dispatch.endpoint,
                     "weights": ray.get(orch.learner.weight_endpoint.remote())}
        t0 = time.time()
        shutdown, orch.shutdown = orch.shutdown, lambda: None  # read the counters before the sockets close
        orch.run()
        thread.join(10)
        result = {"steps": [r["step"] for r in RunDir(Path(cfg.run_dir)).read_metrics()], "seconds": time.time() - t0,
                  "endpoints": endpoints, "listening": listens, "intruder_answered": intrusion.get("answered"),
                  "unauthenticated": orch.rollout_dispatch.rejected.as_dict().get("unauthenticated", 0),
                  "rollout_workers_registered_max": orch.rollout_dispatch.live_workers()}
        shutdown()
        return result
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])), flush=True)
