"""A resizable, self-healing pool of Ray worker actors (rollout or reward).

Scaling up starts actors that register with the dispatcher themselves once ready (a
rollout worker first loads the current weights). Scaling down asks the newest workers
to drain: they stop taking work, hand back what they have not started, and exit; the
dispatcher re-queues anything they still held. No work is lost or done twice because
the dispatcher, not the pool, owns every item (peirce.transport.dispatch).

Health: every worker is pinged every few seconds. A worker that died (crash, OOM,
killed node) is reported through `on_dead` (the orchestrator re-queues its items at
once) and replaced; the replacement syncs the current weights before taking work. A
role whose workers keep failing to start raises `WorkerStartError` with the actor's
own error instead of waiting forever.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

log = logging.getLogger(__name__)


class WorkerStartError(RuntimeError):
    pass


class WorkerPool:
    def __init__(self, role: str, spawn: Callable[[str], Any], *, on_dead: Callable[[str], None] | None = None,
                 ping_every_s: float = 5.0, max_start_failures: int = 3) -> None:
        self.role = role
        self._spawn = spawn
        self._on_dead = on_dead
        self._ids = itertools.count()
        self.target = 0
        self.workers: dict[str, Any] = {}  # worker id -> actor handle
        self._started: set[str] = set()  # answered at least one ping
        self._pings: dict[str, ray.ObjectRef] = {}
        self._draining: dict[str, tuple[Any, ray.ObjectRef]] = {}
        self._ping_every_s = ping_every_s
        self._last_ping = 0.0
        self.start_failures = 0
        self.max_start_failures = max_start_failures
        self.deaths = 0

    @property
    def size(self) -> int:
        return len(self.workers)

    def resize(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"{self.role} workers must be >= 0, got {n}")
        self.target = n
        while len(self.workers) < n:
            wid = f"{self.role}-{next(self._ids)}"
            self.workers[wid] = self._spawn(wid)
            self._pings[wid] = self.workers[wid].alive.remote()
            log.info("started %s", wid)
        while len(self.workers) > n:
            wid = list(self.workers)[-1]
            handle = self.workers.pop(wid)
            self._pings.pop(wid, None)
            self._draining[wid] = (handle, handle.drain.remote())
            log.info("draining %s", wid)

    def reap(self) -> list[str]:
        """Finish drains, detect dead workers, replace them; returns ids that went away."""
        gone = []
        for wid, (handle, ref) in list(self._draining.items()):
            if ray.wait([ref], timeout=0)[0]:
                ray.kill(handle)
                del self._draining[wid]
                gone.append(wid)
        for wid, ref in list(self._pings.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            del self._pings[wid]
            try:
                ok, why = bool(ray.get(ref)), "its loop thread stopped"
            except (RayActorError, RayTaskError) as exc:
                ok, why = False, str(exc)
            if ok:
                self._started.add(wid)
                self.start_failures = 0
                continue
            self._bury(wid, why)
            gone.append(wid)
        now = time.monotonic()
        if now - self._last_ping >= self._ping_every_s:
            self._last_ping = now
            for wid, handle in self.workers.items():
                self._pings.setdefault(wid, handle.alive.remote())
        if len(self.workers) < self.target:
            self.resize(self.target)  # replace the dead
        return gone

    def _bury(self, wid: str, why: str) -> None:
        handle = self.workers.pop(wid, None)
        self.deaths += 1
        if wid not in self._started:
            self.start_failures += 1
            log.error("%s failed to start (%d in a row): %s", wid, self.start_failures, why)
            if self.start_failures >= self.max_start_failures:
                raise WorkerStartError(f"{self.role} workers failed to start {self.start_failures} times in a "
                                       f"row; last error from {wid}:\n{why}")
        else:
            log.error("%s died: %s; replacing it", wid, why)
        if handle is not None:
            ray.kill(handle)
        if self._on_dead:
            self._on_dead(wid)

    def shutdown(self, timeout_s: float = 60.0) -> None:
        self.target = 0
        self.resize(0)
        refs = [ref for _, ref in self._draining.values()]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        for handle, _ in self._draining.values():
            ray.kill(handle)
        self._draining.clear()
