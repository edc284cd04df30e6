"""benchmarks/bench_rollout.py's pure helper: the thread count vLLM's CPU worker will use."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_rollout import vllm_cpu_threads  # noqa: E402


def test_vllm_cpu_threads_follows_vllms_binding_rules():
    assert vllm_cpu_threads({}, usable=2) == 1  # auto: one core reserved for the scheduler
    assert vllm_cpu_threads({"VLLM_CPU_OMP_THREADS_BIND": "auto"}, usable=16) == 15
    assert vllm_cpu_threads({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, usable=2) == 2
    assert vllm_cpu_threads({}, usable=1) == 1
    assert vllm_cpu_threads({"VLLM_CPU_OMP_THREADS_BIND": "0-3,8|9-12"}, usable=16) == 5
    assert vllm_cpu_threads({"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, usable=4) == 4
    with pytest.raises(ValueError, match="VLLM_CPU_OMP_THREADS_BIND"):
        vllm_cpu_threads({"VLLM_CPU_OMP_THREADS_BIND": "3-1"}, usable=4)


def test_eval_role_threads_are_every_core_and_an_explicit_variable_wins():
    from peirce.rollout.cpu_settings import cpu_engine_settings

    env = dict(cpu_engine_settings("avx512_bf16", "eval").env)
    assert vllm_cpu_threads(env, usable=2) == 2
    assert vllm_cpu_threads({**env, "VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}, usable=2) == 1
