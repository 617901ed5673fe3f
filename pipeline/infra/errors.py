"""The errors a command reports in one line: bad input (naming the file and line), a server
that refuses or cannot be reached, a disk without room for the outputs."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
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


class ServiceError(RuntimeError):
    """A server the command depends on refused it or cannot be reached. The message is one line
    that names what to fix (the key's variable, the model, the URL), never a secret."""


# A write that failed for want of room: the disk or a quota is full, or a file-size limit hit.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class OutOfSpace(OSError):
    """No room to write `path`. Everything the command wrote before is kept (the reply log is
    appended record by record), so rerunning the same command resumes where it stopped."""

    def __init__(self, path: str | Path, cause: OSError):
        self.path = str(path)
        super().__init__(
            cause.errno,
            f"{path}: {cause.strerror or cause}: nothing written before is lost; "
            "free some space and rerun the same command: it resumes where it stopped",
        )

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def naming_the_file(path: str | Path) -> Iterator[None]:
    """Turn a write that fails for want of room into `OutOfSpace` naming `path` (a failed
    `write()` names no file of its own)."""
    try:
        yield
    except OutOfSpace:
        raise
    except OSError as e:
        if e.errno in NO_SPACE_ERRNOS:
            raise OutOfSpace(path, e) from None
        raise
