"""Line-by-line reading of text files that reports undecodable bytes by file and line."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pipeline.infra.errors import InputError


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a plain or gzip-compressed (`.gz`) file for binary reading."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, None, "file not found")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its newline) for each line of a UTF-8 file."""
    with open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    path, number, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                ) from None
            yield number, line.rstrip("\r\n")
