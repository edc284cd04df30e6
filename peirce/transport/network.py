"""Which address a process binds, and whether its run needs CURVE keys.

`transport.host: node` means "this process's own Ray node": the driver binds the
dispatchers on its node, the learner binds the weight publisher on its node, and every
peer connects to the endpoint it is handed, so nothing binds a wildcard. The keys are
decided once, in the driver, from the addresses the run's nodes have.
"""

from __future__ import annotations

from collections.abc import Iterable

from peirce.config.schema import TransportConfig
from peirce.transport.security import RunKeys, is_loopback


def bind_host(host: str) -> str:
    """The address to bind for `transport.host` in this process."""
    if host != "node":
        return host
    import ray

    return ray.util.get_node_ip_address()


def needs_curve(tc: TransportConfig, node_addresses: Iterable[str]) -> bool:
    """auth auto: keys unless every endpoint can only be reached from this machine."""
    if tc.auth != "auto":
        return tc.auth == "curve"
    hosts = list(node_addresses) if tc.host == "node" else [tc.host]
    return not all(is_loopback(h) for h in hosts)


def run_keys(tc: TransportConfig) -> RunKeys | None:
    """This run's keys (generated now, in memory), or None when it needs none."""
    nodes: list[str] = []
    if tc.host == "node" and tc.auth == "auto":
        import ray

        nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
    return RunKeys.generate() if needs_curve(tc, nodes) else None
