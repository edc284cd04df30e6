"""A resizable pool of Ray worker actors (rollout or reward) behind one dispatcher.

Scaling up starts actors that register with the dispatcher themselves once ready (a
rollout worker first loads the current weights). Scaling down asks the newest workers
to drain: they stop taking work, hand back what they have not started, and exit; the
dispatcher re-queues anything they still held. No work is lost or done twice because
the dispatcher, not the pool, owns every item (peirce.transport.dispatch).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import ray

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, role: str, spawn: Callable[[str], Any]) -> None:
        self.role = role
        self._spawn = spawn
        self._ids = itertools.count()
        self.workers: dict[str, Any] = {}  # worker id -> actor handle
        self._draining: dict[str, tuple[Any, ray.ObjectRef]] = {}

    @property
    def size(self) -> int:
        return len(self.workers)

    def resize(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"{self.role} workers must be >= 0, got {n}")
        while len(self.workers) < n:
            wid = f"{self.role}-{next(self._ids)}"
            self.workers[wid] = self._spawn(wid)
            log.info("started %s", wid)
        while len(self.workers) > n:
            wid = list(self.workers)[-1]
            handle = self.workers.pop(wid)
            self._draining[wid] = (handle, handle.drain.remote())
            log.info("draining %s", wid)

    def reap(self) -> list[str]:
        """Kill workers that finished draining; returns their ids."""
        done = []
        for wid, (handle, ref) in list(self._draining.items()):
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                ray.kill(handle)
                del self._draining[wid]
                done.append(wid)
        return done

    def shutdown(self, timeout_s: float = 60.0) -> None:
        self.resize(0)
        refs = [ref for _, ref in self._draining.values()]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        for handle, _ in self._draining.values():
            ray.kill(handle)
        self._draining.clear()
