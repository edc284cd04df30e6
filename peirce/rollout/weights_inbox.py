"""Receive weight versions in the background; apply them between generate calls.

The subscriber runs on its own thread so a version is received and acknowledged as
soon as the learner publishes it — the learner never waits for a long generation to
finish. The rollout loop then swaps the newest received version in at the next
batch boundary (generation pauses for the swap; every sample records its version).
"""

from __future__ import annotations

import logging
import threading
import time

from peirce.transport.security import RunKeys
from peirce.transport.weight_sync import WeightSubscriber
from peirce.transport.shm_sync import SharedVersion

log = logging.getLogger(__name__)


class InboxWaits:
    """What every inbox shares (this one and the CUDA one): a background thread that raises
    `received_version` under `_cond`, a wait on it, and a stop. Subclasses set the four fields."""

    close_timeout_s = 5.0
    _cond: threading.Condition
    _stop: threading.Event
    _thread: threading.Thread
    received_version: int

    def wait_for(self, version: int, timeout_s: float) -> bool:
        """Block until a version >= `version` has been received."""
        with self._cond:
            return self._cond.wait_for(lambda: self.received_version >= version, timeout=timeout_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.close_timeout_s)


class WeightsInbox(InboxWaits):
    """`subscriber`: the `WeightSubscriber` class to receive with (the shared-memory one
    yields a `SharedVersion` per version instead of tensors)."""

    def __init__(self, endpoint: str, name: str, version: int, keys: RunKeys | None = None, *,
                 subscriber: type[WeightSubscriber] = WeightSubscriber) -> None:
        self._endpoint, self._name, self._start, self._keys = endpoint, name, version, keys
        self._subscriber = subscriber
        self._cond = threading.Condition()
        self._latest: tuple[int, list] | None = None
        self.received_version = version
        self._stop = threading.Event()
        self.receive_seconds: list[float] = []
        self._thread = threading.Thread(target=self._loop, name=f"weights-{name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        sub = self._subscriber(self._endpoint, name=self._name, version=self._start, keys=self._keys)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                got = sub.receive(timeout=0.5)
                if got is None:
                    continue
                version, tensors = got
                materialised = tensors if isinstance(tensors, SharedVersion) else list(tensors)  # views, kept alive
                with self._cond:
                    self._latest = (version, materialised)
                    self.received_version = version
                    self.receive_seconds.append(time.perf_counter() - t0)
                    self._cond.notify_all()
        finally:
            sub.close()

    def take(self) -> tuple[int, list] | None:
        """The newest version not yet taken, or None."""
        with self._cond:
            latest, self._latest = self._latest, None
            return latest
