"""Peak memory of a pipeline run, sampled by a background thread of the driver.

Two readings, because neither alone is honest: the sum of RSS over the driver and every
process below it (on a local cluster that is Ray's gcs/raylet, every actor and task, and
vLLM's engine processes; shared pages such as the torch libraries are counted once per
process, so it over-counts), and the machine's memory in use (total - available; it
includes whatever else runs on the host, so the report also gives the value at start).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

GIB = 2**30


@dataclass(frozen=True)
class MemoryPeak:
    rss_sum_gib: float  # peak of the summed RSS of the driver's process tree
    system_used_gib: float  # peak of total - available
    system_used_at_start_gib: float
    system_total_gib: float
    samples: int
    interval_s: float
    # peak machine memory in use while each stage ran (`MemorySampler.stage`): which stage binds
    system_used_by_stage_gib: dict[str, float] = field(default_factory=dict)


def tree_rss_bytes(pid: int | None = None) -> int:
    """RSS of process `pid` (default: this one) plus all its descendants; vanished ones skipped."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


class MemorySampler:
    """`start()`, then `stop()` returns the peaks seen; samples every `interval_s`."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss = self._used = 0
        self._samples = 0
        self._start_used = self._total = 0
        self._by_stage: dict[str, int] = {}
        self._lock = threading.Lock()  # the sampling thread and `enter` both sample
        self.stage: str | None = None  # the stage running now; its peak is kept apart

    def _sample(self) -> None:
        import psutil

        rss, vm = tree_rss_bytes(), psutil.virtual_memory()
        used = vm.total - vm.available
        with self._lock:
            self._rss = max(self._rss, rss)
            self._used = max(self._used, used)
            if (stage := self.stage) is not None:
                self._by_stage[stage] = max(self._by_stage.get(stage, 0), used)
            self._samples += 1

    def enter(self, stage: str | None) -> None:
        """From now on samples count toward `stage` (None: toward no stage); a sample is taken at
        once, so a stage shorter than the interval still has a reading."""
        self._sample()  # the last reading of the stage that ends
        with self._lock:
            self.stage = stage
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> "MemorySampler":
        import psutil

        vm = psutil.virtual_memory()
        self._start_used, self._total = vm.total - vm.available, vm.total
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="peirce-memory-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> MemoryPeak:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._sample()
        return MemoryPeak(rss_sum_gib=self._rss / GIB, system_used_gib=self._used / GIB,
                          system_used_at_start_gib=self._start_used / GIB, system_total_gib=self._total / GIB,
                          samples=self._samples, interval_s=self.interval_s,
                          system_used_by_stage_gib={k: v / GIB for k, v in self._by_stage.items()})
