"""Qrels: `qid iteration doc_id relevance` lines (relevance an integer), or `irds:<id>`.

In memory a qrels frame has exactly `QRELS_COLUMNS`, one row per judgment, in file order. A
(qid, doc_id) judged twice and a file without any judgment are errors naming the file and line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract.irds import irds_dataset, irds_records, is_irds
from pipeline.contract.lines import iter_lines
from pipeline.infra.errors import InputError

QID, DOC_ID, RELEVANCE = "qid", "doc_id", "relevance"
QRELS_COLUMNS = (QID, DOC_ID, RELEVANCE)


def read_qrels(path: str | Path) -> pd.DataFrame:
    """Read `qid iteration doc_id relevance` lines into a frame with QRELS_COLUMNS (an empty file raises)."""
    rows = []
    seen: dict[tuple[str, str], int] = {}
    for number, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise InputError(path, number, f"expected 4 fields 'qid iteration doc_id relevance', got {len(fields)}")
        qid, _, doc_id, rel = fields
        try:
            relevance = int(rel)
        except ValueError:
            raise InputError(path, number, f"relevance is not an integer: {rel!r}") from None
        first = seen.setdefault((qid, doc_id), number)
        if first != number:
            raise InputError(path, number, f"duplicate judgment: query {qid!r} doc {doc_id!r} already on line {first}")
        rows.append((qid, doc_id, relevance))
    if not rows:
        raise InputError(path, None, "the qrels hold no judgments (empty file)")
    return pd.DataFrame(rows, columns=list(QRELS_COLUMNS)).astype({RELEVANCE: np.int64})


def load_qrels(spec: str | Path) -> pd.DataFrame:
    """Qrels frame (QRELS_COLUMNS) from a qrels file or `irds:` id."""
    spec = str(spec)
    if not is_irds(spec):
        return read_qrels(spec)
    dataset = irds_dataset(spec)
    judged = irds_records(spec, "qrels", dataset.qrels_iter)
    return pd.DataFrame(
        [(str(q.query_id), str(q.doc_id), int(q.relevance)) for q in judged], columns=list(QRELS_COLUMNS)
    )


def write_qrels(qrels: pd.DataFrame, path: str | Path) -> None:
    """Write a qrels frame as `qid 0 doc_id relevance` lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for qid, doc_id, rel in zip(qrels[QID], qrels[DOC_ID], qrels[RELEVANCE], strict=True):
            f.write(f"{qid} 0 {doc_id} {int(rel)}\n")
