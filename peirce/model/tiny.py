"""Tiny random Llama models with the embedded tokenizer: real architecture, seconds to load.

Tests and the `profile=smoke` pipeline use these so every stage runs for real (vLLM,
DeepSpeed, mergekit) without spending minutes on the 135M model.
"""

from __future__ import annotations

import json
from pathlib import Path

from peirce.model.embedded import prepare_embedded_model
from peirce.paths import peirce_home

_MARKER = "peirce-tiny.json"


def tiny_model_dir(hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    return peirce_home() / "models" / f"tiny-llama-h{hidden_size}-l{num_layers}-s{seed}"


def build_tiny_llama(
    out_dir: Path | None = None,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    dtype: str = "bfloat16",
) -> Path:
    """Write (once) a randomly initialised Llama with the SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir) if out_dir else tiny_model_dir(hidden_size, num_layers, seed)
    if (out / _MARKER).exists():
        return out
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
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / _MARKER).write_text(json.dumps({"hidden_size": hidden_size, "layers": num_layers, "seed": seed}))
    return out
