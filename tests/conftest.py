"""Suite-wide settings: offline hub, loopback Ray, no usage stats.

Area-specific fixtures live in tests/<area>/conftest.py; shared heavy fixtures
(one Ray runtime, one vLLM engine, tiny models) live in tests/fixtures.py style
session fixtures so the suite starts each expensive thing once.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")


# --- shared model folders (session-scoped: built once, reused by every test) ---
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def embedded_model_dir():
    """The prepared SmolLM2-135M-Instruct HF folder (converted once into $PEIRCE_HOME)."""
    from peirce.model.embedded import prepare_embedded_model

    return prepare_embedded_model()


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_model_dir):
    """A 3.2M-parameter random Llama with the SmolLM2 tokenizer; vLLM-compatible head_dim 32."""
    from peirce.model.tiny import build_tiny_llama

    return build_tiny_llama()


_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _no_leaked_launcher_env():
    """A learner built in-process sets MASTER_PORT etc.; don't let it leak into later tests'
    subprocesses and Ray workers (they would rendezvous on a port this process holds)."""
    from peirce.rollout.cpu_settings import restored_env

    with restored_env(_LAUNCHER_VARS):
        yield


def _host_line() -> str:
    """The host kind in every test log: numerics (bf16 rounding, packed kernels) differ between
    CPUs with native bf16 and AVX2-only ones, so a failure report must say which one ran."""
    from peirce.model.precision import cpu_has_native_bf16

    flags = set()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = set(fh.read().split())
    except OSError:
        pass
    shown = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    return f"peirce host: {os.cpu_count()} cpus, flags {' '.join(shown) or 'unknown'}, native bf16: {cpu_has_native_bf16()}"


def pytest_report_header(config):
    return _host_line()


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(_host_line())  # beside the failures, where -q logs are read
