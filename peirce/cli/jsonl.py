"""The JSONL line loop shared by `peirce solve` and `peirce score`: one bad line never stops the rest.

Input is read as bytes and decoded line by line, so invalid UTF-8, a NUL byte, a
too-long line or JSON nested past the parser's recursion limit costs that line only.
Each non-blank input line gives exactly one output line (a result or `{"error": ...}`),
so outputs stay aligned with inputs; errors also go to stderr as `FILE:LINE: message`,
cut to MAX_MESSAGE characters (a message may quote hostile input). A file whose first
block holds a NUL byte is not JSONL at all (an image, an archive, a model file): that is
one error line and no output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

MAX_LINE_BYTES = 16 << 20
MAX_MESSAGE = 300
SNIFF_BYTES = 8192


class LineError(ValueError):
    """A problem with one input line; the message names the field."""


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def require_str(record: dict[str, Any], field: str, *, allow_int: bool = False) -> str:
    if field not in record:
        raise LineError(f"missing field {field!r}")
    value = record[field]
    if isinstance(value, str):
        return value
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise LineError(f"field {field!r} must be a string, got {type(value).__name__}")


def parse_line(raw: bytes) -> dict[str, Any]:
    """One JSON object from one line of bytes, or LineError saying what is wrong with it."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise LineError(f"binary data (a NUL at byte {nul + 1}); expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"invalid UTF-8 at byte {exc.start + 1}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise LineError("JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise LineError(f"expected a JSON object, got {type(record).__name__}")
    return record


def read_lines(fh: IO[bytes]) -> Iterator[tuple[int, bytes | LineError]]:
    """(line number, raw line) per non-blank line; a line over MAX_LINE_BYTES is skipped
    without being held in memory and comes back as a LineError."""
    lineno = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        lineno += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := fh.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            yield lineno, LineError(f"line longer than {MAX_LINE_BYTES} bytes")
        elif raw.strip():
            yield lineno, raw


def _looks_binary(fh: IO[bytes]) -> int | None:
    """Offset of a NUL byte in the first block, without consuming it (None: looks like text)."""
    head = fh.peek(SNIFF_BYTES)[:SNIFF_BYTES] if hasattr(fh, "peek") else b""
    nul = head.find(b"\x00")
    return nul if nul >= 0 else None


def encode_result(result: dict[str, Any]) -> bytes:
    # backslashreplace turns a lone surrogate (from a "\ud800" escape in the input) back into
    # the same JSON escape instead of failing to encode.
    return (json.dumps(result, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")


def process_lines(command: str, path: str, handle: Callable[[dict[str, Any]], dict[str, Any]],
                  out: IO[bytes] | None = None) -> int:
    """Apply `handle` to each JSON object line; return 0 when all succeeded, else 1."""
    out = out if out is not None else sys.stdout.buffer
    try:
        fh = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        print(f"peirce {command}: error: cannot read {path!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    failed = 0
    with fh:
        try:
            nul = _looks_binary(fh)
            if nul is not None:
                print(f"peirce {command}: error: {path}: binary file (NUL byte at offset {nul}); "
                      "expected JSON lines (UTF-8 text)", file=sys.stderr)
                return 1
            for lineno, raw in read_lines(fh):
                try:
                    if isinstance(raw, LineError):
                        raise raw
                    result = handle(parse_line(raw))
                except LineError as exc:
                    failed += 1
                    result = _report(command, path, lineno, str(exc))
                except (KeyError, ValueError) as exc:
                    failed += 1
                    result = _report(command, path, lineno, str(exc))
                except RecursionError:
                    failed += 1
                    result = _report(command, path, lineno, "input nested too deeply")
                except Exception as exc:  # a solver or reward bug costs this line, not the run
                    failed += 1
                    result = _report(command, path, lineno, f"{type(exc).__name__}: {exc}")
                out.write(encode_result(result))
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise  # `| head` closed stdout: peirce.cli.main exits quietly
            print(f"peirce {command}: error: {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 1 if failed else 0


def _report(command: str, path: str, lineno: int, message: str) -> dict[str, str]:
    msg = f"{path}:{lineno}: {clip(message)}"
    print(f"peirce {command}: error: {msg}", file=sys.stderr)
    return {"error": msg}
