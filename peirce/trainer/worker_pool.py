"""A resizable, self-healing pool of worker actors (rollout or reward).

Scaling up starts actors that register with the dispatcher themselves once ready (a
rollout worker first loads the current weights). Scaling down asks the newest workers
to drain: they stop taking work, hand back what they have not started, and exit; the
dispatcher re-queues anything they still held. No work is lost or done twice because
the dispatcher, not the pool, owns every item (peirce.transport.dispatch).

Health: every worker is pinged every few seconds. A worker that died (crash, OOM,
killed node, a rollout worker whose vLLM engine process died) is reported through
`on_dead` (the orchestrator re-queues its items at once) and replaced; the replacement
syncs the current weights before taking work. A role whose workers keep failing to
start raises `WorkerStartError` with the actor's own error instead of waiting forever.

Actors are reached through a `Calls` (peirce.actors.calls): Ray actors by default, plain
objects on threads of this process in fast tests (`ThreadCalls`).

Deaths are classified (`classify_death`): one by Ray's memory monitor is counted in
`oom_deaths` and named on the console with what to change, since replacing the worker
alone will likely meet the same memory pressure again. Any error from a ping is a death,
never the driver's crash: `OutOfMemoryError` is a `RayError` but neither a
`RayActorError` nor a `RayTaskError`, and it used to escape `reap`.
"""

from __future__ import annotations

import enum
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from ray.exceptions import OutOfMemoryError, RayActorError

from peirce.actors.calls import RAY_CALLS, ActorGone, Calls

log = logging.getLogger(__name__)

# Phrases of the raylet's memory-monitor kill message (Ray 2.5x: "Task was killed due to the
# node running low on memory. ... set the environment variable `RAY_memory_usage_threshold`").
# An actor it kills surfaces as ActorDiedError carrying that message, its tasks as OutOfMemoryError.
_MEMORY_MONITOR_PHRASES = ("running low on memory", "memory monitor", "ray_memory_usage_threshold",
                           "memory usage threshold")


class WorkerStartError(RuntimeError):
    pass


class DeathCause(enum.Enum):
    OOM = "killed by Ray's memory monitor"
    DIED = "died"  # the process went away (crash, SIGKILL, ray.kill, node loss)
    LOOP_FAILED = "its loop failed"  # the actor answered, but its worker loop crashed or stopped


def classify_death(exc: BaseException | None) -> DeathCause:
    """Why a ping failed: `exc` is what `Calls.get` raised (None: the ping answered False)."""
    if exc is None:
        return DeathCause.LOOP_FAILED
    if isinstance(exc, OutOfMemoryError):  # also RayTaskError(OutOfMemoryError)
        return DeathCause.OOM
    if isinstance(exc, ActorGone):  # an in-process actor that was killed
        return DeathCause.DIED
    if isinstance(exc, RayActorError):
        text = str(exc).lower()
        return DeathCause.OOM if any(p in text for p in _MEMORY_MONITOR_PHRASES) else DeathCause.DIED
    return DeathCause.LOOP_FAILED  # a RayTaskError: alive() itself raised (the loop's error)


def kill_quietly(handle: Any, what: str, calls: Calls = RAY_CALLS) -> None:
    """`calls.kill` that never raises: on the way out or after a death, a dead actor is fine."""
    try:
        calls.kill(handle)
    except Exception as exc:  # noqa: BLE001 - the actor is gone either way
        log.warning("could not kill %s (%s: %s); it is probably dead already", what, type(exc).__name__, exc)


class WorkerPool:
    def __init__(self, role: str, spawn: Callable[[str], Any], *, on_dead: Callable[[str], None] | None = None,
                 ping_every_s: float = 5.0, max_start_failures: int = 3, calls: Calls = RAY_CALLS) -> None:
        self.role = role
        self.calls = calls
        self._spawn = spawn
        self._on_dead = on_dead
        self._ids = itertools.count()
        self.target = 0
        self.workers: dict[str, Any] = {}  # worker id -> actor handle
        self._started: set[str] = set()  # answered at least one ping
        self._pings: dict[str, Any] = {}  # worker id -> pending alive() call
        self._draining: dict[str, tuple[Any, Any]] = {}  # worker id -> (handle, pending drain() call)
        self._ping_every_s = ping_every_s
        self._last_ping = 0.0
        self.start_failures = 0
        self.max_start_failures = max_start_failures
        self.deaths = 0
        self.oom_deaths = 0  # of `deaths`, those by Ray's memory monitor

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
            self._pings[wid] = self.calls.call(self.workers[wid], "alive")
            log.info("started %s", wid)
        while len(self.workers) > n:
            wid = list(self.workers)[-1]
            handle = self.workers.pop(wid)
            self._pings.pop(wid, None)
            self._draining[wid] = (handle, self.calls.call(handle, "drain"))
            log.info("draining %s", wid)

    def reap(self) -> list[str]:
        """Finish drains, detect dead workers, replace them; returns ids that went away."""
        gone = []
        for wid, (handle, ref) in list(self._draining.items()):
            if self.calls.done(ref):
                kill_quietly(handle, wid, self.calls)
                del self._draining[wid]
                gone.append(wid)
        for wid, ref in list(self._pings.items()):
            if not self.calls.done(ref):
                continue
            del self._pings[wid]
            try:
                ok, why, cause = bool(self.calls.get(ref)), "its loop thread stopped", DeathCause.LOOP_FAILED
            except Exception as exc:  # noqa: BLE001 - whatever the ping raised, the worker is dead
                ok, why, cause = False, str(exc), classify_death(exc)
            if ok:
                self._started.add(wid)
                self.start_failures = 0
                continue
            self._bury(wid, why, cause)
            gone.append(wid)
        now = time.monotonic()
        if now - self._last_ping >= self._ping_every_s:
            self._last_ping = now
            for wid, handle in self.workers.items():
                if wid not in self._pings:
                    self._pings[wid] = self.calls.call(handle, "alive")
        if len(self.workers) < self.target:
            self.resize(self.target)  # replace the dead
        return gone

    def _bury(self, wid: str, why: str, cause: DeathCause = DeathCause.DIED) -> None:
        handle = self.workers.pop(wid, None)
        self.deaths += 1
        if cause is DeathCause.OOM:
            self.oom_deaths += 1
            log.warning("%s was killed by Ray's memory monitor (%d so far in %s); replacing it. If this repeats, "
                        "run fewer workers (peirce scale, %s.workers), lower rollout.kv_cache_gib, or stop other "
                        "memory users on the node (Ray kills above RAY_memory_usage_threshold, default 0.95)",
                        wid, self.oom_deaths, self.role, self.role)
            log.debug("%s memory-monitor kill: %s", wid, why)
        if wid not in self._started:
            self.start_failures += 1
            log.error("%s failed to start (%d in a row): %s", wid, self.start_failures, why)
            if self.start_failures >= self.max_start_failures:
                raise WorkerStartError(f"{self.role} workers failed to start {self.start_failures} times in a "
                                       f"row; last error from {wid}:\n{why}")
        elif cause is not DeathCause.OOM:  # that one has its own line above
            log.error("%s %s: %s; replacing it", wid, cause.value, why)
        if handle is not None:
            kill_quietly(handle, wid, self.calls)
        if self._on_dead:
            self._on_dead(wid)

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Drain every worker (bounded by `timeout_s`), then kill them all. Never raises for a
        worker that is already dead or does not answer: shutdown runs on the error path too."""
        self.target = 0
        self.resize(0)
        deadline = time.monotonic() + timeout_s
        for wid, (_, ref) in self._draining.items():
            try:
                self.calls.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - killing below is all that is left to do
                log.warning("%s drain did not finish (%s: %s)", wid, type(exc).__name__, exc)
        for wid, (handle, _) in self._draining.items():
            kill_quietly(handle, wid, self.calls)
        self._draining.clear()
