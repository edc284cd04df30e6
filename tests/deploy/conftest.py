"""Real Prometheus for the deploy tests, scraping a pluggable metrics source.

A *metrics source* is a function `(targets_dir) -> MetricsSource` that starts something
announcing exporters into `targets_dir` (file_sd, like every peirce actor) and returns
how to stop it. The default is the synthetic workload of `peirce.monitoring.promtest`;
set PEIRCE_DEPLOY_SOURCE=smoke to scrape a real `peirce train` smoke run instead, or add
a factory to SOURCES. Prometheus itself is installed by deploy/prometheus/install.sh;
the tests skip, with the reason, only when that is impossible.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from peirce.monitoring.promtest import PrometheusServer, render_config
from prom_sources import REPO, SOURCES, MetricsSource, wait_all_up

INSTALL = REPO / "deploy" / "prometheus" / "install.sh"


def ensure_prometheus() -> None:
    if shutil.which("prometheus") and shutil.which("promtool"):
        return
    r = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not (shutil.which("prometheus") and shutil.which("promtool")):
        pytest.skip(f"Prometheus cannot be installed here: {r.stderr.strip()[-500:]}")


@pytest.fixture(scope="session")
def promtool() -> str:
    ensure_prometheus()
    return shutil.which("promtool")


@pytest.fixture(scope="session")
def metrics_source_factory() -> Callable[[Path], MetricsSource]:
    name = os.environ.get("PEIRCE_DEPLOY_SOURCE", "synthetic")
    if name not in SOURCES:
        raise ValueError(f"PEIRCE_DEPLOY_SOURCE={name!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[name]


@pytest.fixture(scope="session")
def prom_targets_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prom") / "targets"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def prometheus(promtool, prom_targets_dir) -> PrometheusServer:
    """A real Prometheus (1 s scrapes) discovering exporters through `prom_targets_dir`."""
    server = PrometheusServer(render_config(prom_targets_dir, scrape_interval="1s"),
                              workdir=prom_targets_dir.parent / "server")
    with server:
        yield server


@pytest.fixture(scope="session")
def metrics_source(prometheus, prom_targets_dir, metrics_source_factory) -> MetricsSource:
    """The source running, and every one of its targets up in Prometheus."""
    source = metrics_source_factory(prom_targets_dir)
    try:
        wait_all_up(prometheus, prom_targets_dir, source.startup_timeout)
        yield source
    finally:
        source.stop()
