"""A real three-node Ray cluster on one machine (head 127.0.0.2, learner on .3, rollout on
.4, pinned by custom resources): a smoke run trains across it with every peirce endpoint
bound on its own node's address and CURVE on every ZeroMQ socket, and a peer without the
run's keys is refused at the handshake and counted. Runs in its own process
(multinode_run.py): a driver joins one Ray cluster per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from multinode_run import HEAD, LEARNER_NODE, ROLLOUT_NODE

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def _ips(listening: list[str]) -> set[str]:
    return {a.rsplit(":", 1)[0] for a in listening}


def test_a_smoke_run_trains_across_three_nodes_with_authenticated_endpoints(tmp_path):
    script = Path(__file__).with_name("multinode_run.py")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["steps"] == [1, 2, 3]
    ep = out["endpoints"]
    assert ep["rollout_dispatch"].startswith(f"tcp://{HEAD}:") and ep["reward_dispatch"].startswith(f"tcp://{HEAD}:")
    assert ep["weights"].startswith(f"tcp://{LEARNER_NODE}:")
    own = {"driver": HEAD, "learner": LEARNER_NODE, "rollout": ROLLOUT_NODE, "reward": HEAD}
    for role, listening in out["listening"].items():
        ips = _ips(listening)
        # peirce's sockets on the node's own address; loopback-only ones (the control socket,
        # gloo's pair) on 127.0.0.1; never an IPv4 wildcard
        assert own[role] in ips and "0.0.0.0" not in ips and ips <= {own[role], "127.0.0.1", "::"}, (role, listening)
        # `::` is Ray's own core-worker server (one per Ray worker process), not peirce's
        assert sum(a.startswith(":::") for a in listening) <= 1, (role, listening)
    assert out["intruder_answered"] is False and out["unauthenticated"] >= 1
    assert out["rollout_workers_registered_max"] == 1
