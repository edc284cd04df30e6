"""Run a Stage B merge with mergekit, from local folders only, into a loadable HF folder.

mergekit treats any path that does not exist as a Hugging Face hub id, so a typo would
become a download attempt (or an opaque offline error); every input folder is checked
here first. The output is written to a temporary sibling folder and renamed, so a
reader never sees a half-written model. The tokenizer and chat template come from the
base model (task_arithmetic, ties) or the first specialist (linear), and the exact
mergekit configuration is kept beside the weights as `merge.yaml` (`mergekit-yaml
merge.yaml OUT` reproduces the weights).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from peirce.merge.config import MergeConfig

LOG = logging.getLogger(__name__)

# Files that make a folder usable as a tokenizer + chat template (what mergekit copies too).
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
WEIGHT_PATTERNS: tuple[str, ...] = ("*.safetensors", "pytorch_model*.bin")
# config.json values that decide tensor shapes: inputs must agree on all of them.
SHAPE_KEYS: tuple[str, ...] = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "tie_word_embeddings",
)


class MergeError(RuntimeError):
    """A merge could not run; the message names the config field or the input folder."""


def check_model_folder(field: str, path: str | Path) -> Path:
    """Resolve `path` to an absolute local HF folder, or raise naming `field` and the path."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise MergeError(f"{field}: {str(path)!r} does not exist (a local HF folder is required; hub ids are not fetched)")
    if not folder.is_dir():
        raise MergeError(f"{field}: {str(path)!r} is not a folder")
    if not (folder / "config.json").is_file():
        raise MergeError(f"{field}: {str(path)!r} has no config.json (not a Hugging Face model folder)")
    if not any(next(folder.glob(p), None) for p in WEIGHT_PATTERNS):
        raise MergeError(f"{field}: {str(path)!r} has no weights (*.safetensors or pytorch_model*.bin)")
    return folder.resolve()


def check_same_architecture(folders: dict[str, Path]) -> None:
    """Every folder (field name -> folder) has the reference folder's shape-defining config values."""
    ref_field, *_ = folders
    configs = {field: json.loads((folder / "config.json").read_text()) for field, folder in folders.items()}
    ref = configs[ref_field]
    for field, conf in configs.items():
        for key in SHAPE_KEYS:
            if conf.get(key) != ref.get(key):
                raise MergeError(
                    f"{field}: config.json {key}={conf.get(key)!r} differs from {ref_field}'s {ref.get(key)!r} "
                    "(merged models must share one architecture)"
                )


def resolve_inputs(cfg: MergeConfig) -> tuple[dict[str, Path], Path | None]:
    """Check every input folder of `cfg`; returns (specialist name -> folder, base folder)."""
    models = {name: check_model_folder(f"models.{name}", p) for name, p in cfg.models.items()}
    base = check_model_folder("base_model", cfg.base_model) if cfg.base_model else None
    fields = {"base_model": base} if base is not None else {}
    check_same_architecture({**fields, **{f"models.{n}": f for n, f in models.items()}})
    return models, base


def build_mergekit_config(cfg: MergeConfig, models: dict[str, Path], base: Path | None) -> dict[str, Any]:
    """The mergekit YAML mapping for `cfg` (pure; folders already resolved).

    `normalize` is always written out (never left to mergekit's default), so merge.yaml
    states the arithmetic that produced the weights.
    """
    entries = []
    for name, folder in models.items():
        params: dict[str, Any] = {"weight": float(cfg.weights[name])}
        if cfg.method == "ties":
            params["density"] = float(cfg.density if cfg.density is not None else 1.0)
        entries.append({"model": str(folder), "parameters": params})
    out: dict[str, Any] = {"merge_method": cfg.method, "models": entries, "dtype": cfg.dtype}
    if base is not None:
        out["base_model"] = str(base)
    out["parameters"] = {"normalize": cfg.effective_normalize}
    return out


def copy_tokenizer(donor: Path, out_dir: Path) -> list[str]:
    """Copy tokenizer, chat template and generation config files from `donor`; returns the names."""
    copied = [name for name in TOKENIZER_FILES if (donor / name).is_file()]
    if "tokenizer_config.json" not in copied or not {"tokenizer.json", "tokenizer.model", "vocab.json"} & set(copied):
        raise MergeError(f"{donor}: no tokenizer (tokenizer_config.json plus tokenizer.json/.model) to copy into the merged model")
    for name in copied:
        shutil.copy2(donor / name, out_dir / name)
    return copied


def _forget_mergekit_loaders() -> None:
    """Drop mergekit's process-wide tensor loaders (a class-level dict keyed by path).

    Without this a long-lived process (MergeActor, the `peirce run` driver) merges a
    folder that was rewritten since the last merge from the stale cached loader.
    """
    from mergekit.io.tasks import LoaderCache

    cache = LoaderCache()
    cache.flush_all()
    cache.loaders.clear()


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise MergeError(f"out_dir: {str(out_dir)!r} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise MergeError(f"out_dir: {str(out_dir)!r} is not empty (pass overwrite=True / --overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def run_merge(cfg: MergeConfig, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Merge with mergekit on CPU into `out_dir`; returns the folder (loads in transformers and vLLM)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions
    from mergekit.merge import run_merge as mergekit_run_merge

    models, base = resolve_inputs(cfg)
    out = Path(out_dir).expanduser().resolve()
    _prepare_out_dir(out, overwrite)
    mk_dict = build_mergekit_config(cfg, models, base)
    try:
        mk_config = MergeConfiguration.model_validate(mk_dict)
    except Exception as exc:  # pydantic error from mergekit's own schema: a bug in build_mergekit_config
        raise MergeError(f"mergekit rejected the generated config {mk_dict}: {exc}") from exc

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-merge-", dir=out.parent))
    try:
        options = MergeOptions(device="cpu", copy_tokenizer=False, write_model_card=False, quiet=True)
        LOG.info("merging %s with %s into %s", list(models), cfg.method, out)
        _forget_mergekit_loaders()
        try:
            mergekit_run_merge(mk_config, str(tmp), options=options)
        except Exception as exc:
            raise MergeError(f"mergekit {cfg.method} merge of {list(models)} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            _forget_mergekit_loaders()
        copy_tokenizer(base if base is not None else next(iter(models.values())), tmp)
        (tmp / "merge.yaml").write_text(yaml.safe_dump(mk_dict, sort_keys=False))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
