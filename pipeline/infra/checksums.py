"""A file's digest, read in blocks (memory: one block, whatever the file's size)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of the file's bytes: sha256 by default, or any `hashlib` name (md5 for Zenodo)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()
