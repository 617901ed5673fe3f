"""Where data comes from: local files, or `irds:<id>` for ir_datasets (needs internet once).

`irds:msmarco-passage/trec-dl-2019/judged` names queries and qrels, and
`irds:msmarco-passage` the 8.8M-passage corpus. ir_datasets downloads on first use and
caches under IR_DATASETS_HOME; offline it can only read what is already there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from pipeline.infra.errors import InputError
from pipeline.io.corpus import iter_passages
from pipeline.io.queries import read_queries
from pipeline.io.trec import read_qrels
from pipeline.schemas import QRELS_COLUMNS, Passage

IRDS_PREFIX = "irds:"


def _irds(spec: str):
    try:
        import ir_datasets
    except ImportError:  # pragma: no cover - part of the standard environment
        raise InputError(spec, None, "ir_datasets is not installed (pip install ir_datasets)") from None
    try:
        return ir_datasets.load(spec.removeprefix(IRDS_PREFIX))
    except KeyError:
        raise InputError(spec, None, "unknown ir_datasets id (see https://ir-datasets.com)") from None


def _irds_call(spec: str, what: str, fn):
    try:
        yield from fn()
    except OSError as e:  # ir_datasets raises IOError when no download source works (offline)
        raise InputError(
            spec, None, f"cannot read {what} from ir_datasets ({e}); offline, place the files under IR_DATASETS_HOME"
        ) from None


def load_passages(spec: str | Path) -> Iterator[tuple[int, Passage]]:
    """Stream (line or record number, Passage) from a corpus file or `irds:` id."""
    spec = str(spec)
    if not spec.startswith(IRDS_PREFIX):
        yield from iter_passages(spec)
        return
    dataset = _irds(spec)

    def records():
        for number, doc in enumerate(dataset.docs_iter(), start=1):
            title = getattr(doc, "title", None) or None
            yield number, Passage(str(doc.doc_id), doc.text, title)

    yield from _irds_call(spec, "documents", records)


def load_queries(spec: str | Path) -> dict[str, str]:
    """{qid: text} from a query file or `irds:` id (empty query texts raise InputError)."""
    spec = str(spec)
    if not spec.startswith(IRDS_PREFIX):
        return read_queries(spec)
    dataset = _irds(spec)
    queries: dict[str, str] = {}
    for number, query in enumerate(_irds_call(spec, "queries", dataset.queries_iter), start=1):
        if not query.text.strip():
            raise InputError(spec, number, f"query {query.query_id!r} has empty text")
        queries[str(query.query_id)] = query.text.strip()
    return queries


def load_qrels(spec: str | Path) -> pd.DataFrame:
    """Qrels frame (QRELS_COLUMNS) from a qrels file or `irds:` id."""
    spec = str(spec)
    if not spec.startswith(IRDS_PREFIX):
        return read_qrels(spec)
    dataset = _irds(spec)
    rows = [(str(q.query_id), str(q.doc_id), int(q.relevance)) for q in _irds_call(spec, "qrels", dataset.qrels_iter)]
    return pd.DataFrame(rows, columns=list(QRELS_COLUMNS))
