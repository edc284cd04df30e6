"""WorkerPool death handling: which deaths are Ray's memory monitor, and that every death,
whatever its cause, is replaced without raising into the driver.

The classification tests build real Ray exception objects (the ones `ray.get` raises);
the pool tests run real Ray actors (marked slow: they start Ray) that die by `ray.kill`,
by SIGKILL, or whose ping raises Ray's own `OutOfMemoryError`. A kill by the real memory
monitor needs a node pushed past RAY_memory_usage_threshold, which this shared box cannot
afford; its message is the one the raylet writes (ray 2.60), built into the error here.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest
from ray.core.generated.common_pb2 import ActorDiedErrorContext
from ray.exceptions import ActorDiedError, ActorUnavailableError, OutOfMemoryError, RayTaskError

from peirce.trainer.worker_pool import DeathCause, WorkerPool, classify_death

# What the raylet's memory monitor writes when it kills a worker (ray 2.60, abridged).
MONITOR_MSG = ("Task was killed due to the node running low on memory. Memory on the node (IP: 127.0.0.1) where "
               "the task (actor ID: 01, name=RolloutWorker.__init__, pid=4242, memory used=4.5GB) was running was "
               "22.9GB / 24.0GB (0.954), which exceeds the memory usage threshold of 0.95. Ray killed this worker. "
               "To adjust the kill threshold, set the environment variable `RAY_memory_usage_threshold`.")


def _actor_died(message: str) -> ActorDiedError:
    return ActorDiedError(ActorDiedErrorContext(error_message=message, actor_id=b"\x01" * 16,
                                                class_name="RolloutWorker", pid=4242))


@pytest.mark.parametrize(("exc", "cause"), [
    (OutOfMemoryError(MONITOR_MSG), DeathCause.OOM),  # a pending task of the killed actor
    (RayTaskError("alive", "tb", OutOfMemoryError(MONITOR_MSG)).as_instanceof_cause(), DeathCause.OOM),
    (_actor_died(MONITOR_MSG), DeathCause.OOM),  # the actor itself, with the monitor's message
    (_actor_died("The actor is dead because it was killed by `ray.kill`."), DeathCause.DIED),
    (_actor_died("Worker exits unexpectedly. SIGKILL: worker process exited with signal 9"), DeathCause.DIED),
    (ActorDiedError(), DeathCause.DIED),  # cause unknown
    (ActorUnavailableError("connection reset", None), DeathCause.DIED),
    (RayTaskError("alive", "tb", RuntimeError("worker loop crashed")).as_instanceof_cause(), DeathCause.LOOP_FAILED),
    # A loop error that merely talks about memory is the loop's error, not a monitor kill.
    (RayTaskError("alive", "tb", RuntimeError("CUDA out of memory; memory monitor said hi")).as_instanceof_cause(),
     DeathCause.LOOP_FAILED),
    (None, DeathCause.LOOP_FAILED),  # the ping answered False: the loop thread stopped
])
def test_classify_death(exc, cause):
    assert classify_death(exc) is cause


def test_a_plain_actor_death_mentioning_memory_elsewhere_is_not_oom():
    """Only the monitor's phrases count: an object-store or node message about 'memory' does not."""
    assert classify_death(_actor_died("The node ran out of object store memory; node died")) is DeathCause.DIED


# -- real Ray actors ----------------------------------------------------------------------


def _probe_class():
    """A worker-shaped actor: alive() answers, or raises what a dying worker would. Built in a
    function so Ray ships it by value (the workers cannot import this test module)."""

    class Probe:
        def __init__(self) -> None:
            self.mode = "ok"

        def set_mode(self, mode: str) -> None:
            self.mode = mode

        def alive(self) -> bool:
            if self.mode == "oom":
                raise OutOfMemoryError(MONITOR_MSG)
            return self.mode == "ok"

        def pid(self) -> int:
            return os.getpid()

        def drain(self) -> int:
            return 0

    return Probe


def _pool(ray_runtime, dead: list[str]) -> WorkerPool:
    remote = ray_runtime.remote(num_cpus=0)(_probe_class())
    pool = WorkerPool("probe", lambda wid: remote.remote(), on_dead=dead.append, ping_every_s=0.1)
    pool.resize(2)
    _reap_until(pool, lambda: len(pool._started) == 2, "both probes answered")
    return pool


def _reap_until(pool: WorkerPool, predicate, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: deaths={pool.deaths} workers={list(pool.workers)}")
        pool.reap()
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["oom", "ray.kill", "sigkill", "loop"])
def test_pool_replaces_each_kind_of_death_and_counts_oom(ray_runtime, caplog, how):
    dead: list[str] = []
    pool = _pool(ray_runtime, dead)
    victim, handle = next(iter(pool.workers.items()))
    if how == "oom":
        ray_runtime.get(handle.set_mode.remote("oom"))
    elif how == "loop":
        ray_runtime.get(handle.set_mode.remote("stopped"))
    elif how == "ray.kill":
        ray_runtime.kill(handle)
    else:
        os.kill(ray_runtime.get(handle.pid.remote()), signal.SIGKILL)
    try:
        with caplog.at_level(logging.WARNING, logger="peirce.trainer.worker_pool"):
            _reap_until(pool, lambda: pool.deaths == 1 and pool.size == 2, "death noticed and replaced")
        assert dead == [victim]
        assert victim not in pool.workers and pool.size == 2
        assert pool.oom_deaths == (1 if how == "oom" else 0)
        monitor_lines = [r.getMessage() for r in caplog.records if "memory monitor" in r.getMessage()]
        if how == "oom":
            assert len(monitor_lines) == 1 and victim in monitor_lines[0] and "fewer workers" in monitor_lines[0]
        else:
            assert not monitor_lines
        _reap_until(pool, lambda: len(pool._started) == 3, "the replacement answered")  # 2 first + 1 new
    finally:
        pool.shutdown(timeout_s=10)


@pytest.mark.slow
def test_shutdown_tolerates_dead_and_unresponsive_workers(ray_runtime):
    """Shutdown runs on the error path: a worker killed meanwhile must not make it raise."""
    pool = _pool(ray_runtime, [])
    first, second = list(pool.workers.values())
    os.kill(ray_runtime.get(first.pid.remote()), signal.SIGKILL)
    ray_runtime.kill(second)
    pool.shutdown(timeout_s=5)  # drains refs that fail, kills handles that are gone
    assert pool.size == 0 and not pool._draining
