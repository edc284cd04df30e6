"""What every peirce actor does on start: quiet, offline, loopback, own metrics port."""

from __future__ import annotations

import logging
import os

from peirce.metrics import MetricsExporter

ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def actor_setup(run: str, worker: str, metrics_host: str = "127.0.0.1") -> MetricsExporter:
    for k, v in ENV_DEFAULTS.items():
        os.environ.setdefault(k, v)
    logging.basicConfig(level=os.environ.get("PEIRCE_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s {run}/{worker} %(levelname)s %(name)s: %(message)s")
    metrics = MetricsExporter(run=run, worker=worker)
    metrics.serve(host=metrics_host, port=0)
    return metrics
