"""A first stage's index folder: built aside in DIR.tmp and renamed into place, complete, with
`DIR/distillm.json` saying where it came from (corpus, settings, versions, timing)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

PROVENANCE = "distillm.json"


def finish_index(tmp: Path, index_dir: Path, provenance: dict) -> None:
    """Write the provenance into the finished index and move it into place."""
    (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    if index_dir.exists():
        shutil.rmtree(index_dir)
    os.replace(tmp, index_dir)


def read_provenance(index_dir: str | Path) -> dict | None:
    """`distillm.json` of an index built here, or None for an index built elsewhere."""
    path = Path(index_dir) / PROVENANCE
    return json.loads(path.read_text()) if path.exists() else None
