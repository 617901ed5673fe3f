"""Text files read line by line: plain or gzip-compressed, undecodable bytes named by file and line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pipeline.infra.errors import InputError


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a plain or gzip-compressed (`.gz`) file for binary reading."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "file not found")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def decode_utf8(path: str | Path, line: int | None, raw: bytes, offset: int | None = None) -> str:
    """`raw` as UTF-8 text, or InputError naming the first bad byte: by its column in the line,
    or (with `offset`, where `raw` starts in the file) by its byte offset in the file. `line`
    None: `raw` is a whole file and the line is counted."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1 if line is None else line
        where = f"column {e.start + 1}" if offset is None else f"byte offset {offset + e.start} of the file"
        raise InputError(path, line, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at {where})") from None


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its newline) for each line of a UTF-8 file."""
    with open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            yield number, decode_utf8(path, number, raw).rstrip("\r\n")


def json_object(path: str | Path, number: int, line: str) -> dict[str, Any]:
    """One JSONL line as a JSON object, or InputError naming the line (invalid JSON, not an object)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(path, number, f"invalid JSON: {e.msg}") from None
    if not isinstance(record, dict):
        raise InputError(path, number, "expected a JSON object")
    return record


def first_key(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    """The value under the first of `keys` the record has (None: none of them)."""
    return next((record[k] for k in keys if k in record), None)
