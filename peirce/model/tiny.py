"""Tiny random Llama models with the embedded tokenizer: real architecture, seconds to load.

Tests and the `profile=smoke` pipeline use these so every stage runs for real (vLLM,
DeepSpeed, mergekit) without spending minutes on the 135M model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from peirce.model.embedded import prepare_embedded_model
from peirce.paths import peirce_home

_MARKER = "peirce-tiny.json"
# vLLM's CPU attention kernels only support these head sizes (vllm/v1/attention/backends/cpu_attn.py);
# head_dim 16 loads fine but fails on the first forward pass ("Unsupported CPU attention configuration").
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def tiny_model_dir(hidden_size: int = 64, num_layers: int = 2, seed: int = 0, num_heads: int = 2) -> Path:
    return peirce_home() / "models" / f"tiny-llama-h{hidden_size}-l{num_layers}-a{num_heads}-s{seed}"


def build_tiny_llama(
    out_dir: Path | None = None,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int = 1,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    dtype: str = "bfloat16",
) -> Path:
    """Write (once) a randomly initialised Llama with the SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir) if out_dir else tiny_model_dir(hidden_size, num_layers, seed, num_heads)
    if (out / _MARKER).exists():
        return out
    if hidden_size % num_heads or hidden_size // num_heads not in VLLM_CPU_HEAD_SIZES:
        raise ValueError(
            f"hidden_size/num_heads = {hidden_size}/{num_heads} gives head_dim {hidden_size / num_heads}; "
            f"vLLM on CPU needs one of {VLLM_CPU_HEAD_SIZES}"
        )
    tokenizer = AutoTokenizer.from_pretrained(prepare_embedded_model())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temp folder and rename: concurrent test processes never see a half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-tiny-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {"hidden_size": hidden_size, "layers": num_layers, "heads": num_heads, "seed": seed}
        (tmp / _MARKER).write_text(json.dumps(meta))
        if out.exists() and not (out / _MARKER).exists():
            shutil.rmtree(out, ignore_errors=True)  # leftover of an interrupted older writer
        try:
            tmp.rename(out)
        except OSError:
            if not (out / _MARKER).exists():  # lost the race to a writer that then failed
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
