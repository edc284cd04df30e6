"""One Ray runtime for all engine end-to-end tests (real Ray, vLLM, DeepSpeed, ZeroMQ)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_runtime():
    import ray

    from peirce.actors.runtime import ensure_ray

    ensure_ray(num_cpus=8)
    yield ray
    ray.shutdown()
