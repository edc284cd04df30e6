"""How the driver reaches an actor: start a call, poll it, wait for it, end the actor.

The driver loop (peirce.trainer.orchestrator) and the worker pools never touch Ray
themselves; they go through a `Calls`, so the same loop runs on Ray actors (`RayCalls`,
what `peirce train` uses) or on plain objects in this process (`ThreadCalls`, for fast
tests of the loop without starting Ray). An actor handle is whatever the implementation
calls methods on: a Ray actor handle, or the plain object itself.

Both give an actor's calls the order and the exclusion of a Ray actor: one call at a
time, in the order they were made. Errors surface from `get`: Ray raises its `RayError`s
(which `peirce.trainer.worker_pool.classify_death` reads), `ThreadCalls` the method's own
exception, or `ActorGone` once the actor was killed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol


class Calls(Protocol):
    def call(self, actor: Any, method: str, *args: Any) -> Any:
        """Start `actor.method(*args)`; returns a pending call (never blocks)."""
        ...

    def done(self, pending: Any) -> bool:
        """True once `get` would return (or raise) at once."""
        ...

    def get(self, pending: Any, timeout: float | None = None) -> Any:
        """The call's return value; raises its error, or a timeout error after `timeout` s."""
        ...

    def when_done(self, pending: Any, callback: Callable[[], None]) -> None:
        """Call `callback()` (on some other thread) once the call has ended, however it ended."""
        ...

    def kill(self, actor: Any) -> None:
        """End the actor; later calls fail. Raises if it cannot (callers that do not care catch)."""
        ...


class RayCalls:
    """Ray actors: `actor.method.remote(*args)`, an ObjectRef, `ray.wait` / `ray.get` / `ray.kill`."""

    def call(self, actor: Any, method: str, *args: Any) -> Any:
        return getattr(actor, method).remote(*args)

    def done(self, pending: Any) -> bool:
        import ray

        return bool(ray.wait([pending], timeout=0)[0])

    def get(self, pending: Any, timeout: float | None = None) -> Any:
        import ray

        return ray.get(pending, timeout=timeout)

    def when_done(self, pending: Any, callback: Callable[[], None]) -> None:
        pending.future().add_done_callback(lambda _f: callback())

    def kill(self, actor: Any) -> None:
        import ray

        ray.kill(actor)


class ActorGone(RuntimeError):
    """A call to an in-process actor that was killed (what Ray reports as RayActorError)."""


class ThreadCalls:
    """Plain objects as actors in this process: each runs its calls on a thread of its own.

    Killing cannot stop a thread: it refuses the actor's later calls (`ActorGone`) and
    drops the ones not started; a method already running finishes on its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lanes: dict[int, tuple[Any, ThreadPoolExecutor | None]] = {}  # id -> (actor, executor; None: killed)

    def call(self, actor: Any, method: str, *args: Any) -> Future:
        fn = getattr(actor, method)  # an unknown method fails here, as `.remote` would
        with self._lock:
            if id(actor) not in self._lanes:
                self._lanes[id(actor)] = (actor, ThreadPoolExecutor(1, f"actor-{type(actor).__name__}"))
            lane = self._lanes[id(actor)][1]
            if lane is not None:
                return lane.submit(fn, *args)
        gone: Future = Future()
        gone.set_exception(ActorGone(f"{type(actor).__name__}.{method}: the actor was killed"))
        return gone

    def done(self, pending: Future) -> bool:
        return pending.done()

    def get(self, pending: Future, timeout: float | None = None) -> Any:
        return pending.result(timeout)

    def when_done(self, pending: Future, callback: Callable[[], None]) -> None:
        pending.add_done_callback(lambda _f: callback())

    def kill(self, actor: Any) -> None:
        with self._lock:
            _, lane = self._lanes.get(id(actor), (actor, None))
            self._lanes[id(actor)] = (actor, None)  # the actor stays referenced: its id is not reused
        if lane is not None:
            lane.shutdown(wait=False, cancel_futures=True)


RAY_CALLS = RayCalls()
