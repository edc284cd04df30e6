"""The run's memory sampler: machine and process-tree peaks, and each stage's own peak."""

from __future__ import annotations

import psutil

from peirce.pipeline.monitor import MemorySampler


def test_each_stage_keeps_its_own_peak_and_unlabelled_time_counts_only_overall():
    sampler = MemorySampler(interval_s=60.0).start()  # no thread sample within the test: only those below
    sampler.enter("stage_a")
    held = bytearray(256 << 20)  # 256 MiB more in use while stage_b runs
    held[:: 4096] = b"x" * len(held[:: 4096])  # touch every page so it is resident
    sampler.enter("stage_b")
    sampler.enter(None)
    peak = sampler.stop()
    del held
    total = psutil.virtual_memory().total / 2**30
    assert set(peak.system_used_by_stage_gib) == {"stage_a", "stage_b"}
    a, b = peak.system_used_by_stage_gib["stage_a"], peak.system_used_by_stage_gib["stage_b"]
    assert 0 < a <= peak.system_used_gib <= total and 0 < b <= peak.system_used_gib
    assert peak.rss_sum_gib > 0.25  # this process holds the 256 MiB
    assert peak.samples == 8  # start, two on each of three enters, stop
