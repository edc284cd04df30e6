"""Launcher variables for a learner that no launcher started."""

from __future__ import annotations

import socket

import pytest

from peirce.learner.dist_env import claim_single_rank_env, ensure_dist_env


def test_existing_launcher_values_are_kept(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_PORT", "29555")
    env = ensure_dist_env()
    assert (env.rank, env.world_size, env.master_port) == (1, 4, 29555)
    assert ensure_dist_env(master_addr="10.0.0.2").master_addr == "10.0.0.2"  # explicit arguments win


def test_bad_launcher_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        ensure_dist_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK"):
        ensure_dist_env()


def test_single_rank_learner_ignores_an_inherited_port_that_is_taken(monkeypatch):
    """The CI failure: a Ray actor inherited MASTER_PORT from a driver that held it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setenv("MASTER_PORT", str(taken))
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("MASTER_ADDR", "10.0.0.9")
        env = claim_single_rank_env()
        assert (env.rank, env.world_size, env.master_addr) == (0, 1, "127.0.0.1")
        assert env.master_port != taken
        with socket.socket() as probe:  # the claimed port is bindable
            probe.bind(("127.0.0.1", env.master_port))


def test_a_single_rank_learner_listens_on_no_wildcard_address():
    """env:// would start a TCPStore on MASTER_PORT listening on `::` (every interface); one
    rank needs no rendezvous, so nothing the learner opens may be reachable from the network."""
    import ast
    import subprocess
    import sys

    code = ("import psutil\n"
            "from peirce.learner.dist_env import claim_single_rank_env, init_distributed\n"
            "claim_single_rank_env(); init_distributed()\n"
            "print([c.laddr.ip for c in psutil.Process().net_connections(kind='tcp') if c.status == 'LISTEN'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    addresses = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert addresses and all(ip.startswith("127.") for ip in addresses), addresses
