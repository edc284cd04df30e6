"""`auto` precision: bf16 only where the hardware runs it natively (pure, no model)."""

from __future__ import annotations

import pytest

import peirce.model.precision as precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_the_hardware(monkeypatch, native):
    monkeypatch.setattr(precision, "bf16_is_native", lambda: native)
    assert precision.use_bf16("auto") is native


@pytest.mark.parametrize("native", [True, False])
def test_explicit_choices_are_kept(monkeypatch, native):
    monkeypatch.setattr(precision, "bf16_is_native", lambda: native)
    assert precision.use_bf16("bf16") is True
    assert precision.use_bf16("fp32") is False


def test_cpu_flags_are_read_from_cpuinfo():
    flags = open("/proc/cpuinfo").read().split()
    assert precision.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
