"""The one error type for bad input: it names the file and line it comes from."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input data, located at `path:line` (line is 1-based; None when not line-based)."""

    def __init__(self, path: str | Path | None, line: int | None, message: str):
        self.path = None if path is None else str(path)
        self.line = line
        self.message = message
        where = self.path or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")
