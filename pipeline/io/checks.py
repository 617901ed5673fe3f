"""Cross-file checks: a run may only name queries and passages that exist."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import InputError
from pipeline.io.corpus import CorpusStore


def check_run_references(
    run: pd.DataFrame, run_path: str | Path, queries: dict[str, str] | None = None, corpus: CorpusStore | None = None
) -> None:
    """Raise InputError at the first run line whose query or passage is unknown (with counts)."""
    if queries is not None:
        unknown = ~run["qid"].isin(queries.keys())
        if unknown.any():
            first = run[unknown].iloc[0]
            n = run.loc[unknown, "qid"].nunique()
            raise InputError(
                run_path, int(first["line"]), f"query {first['qid']!r} is not in the queries ({n} unknown queries)"
            )
    if corpus is not None:
        doc_ids = pd.unique(run["doc_id"])
        missing = set(corpus.missing(list(doc_ids)))
        if missing:
            bad = run["doc_id"].isin(missing)
            first = run[bad].iloc[0]
            raise InputError(
                run_path,
                int(first["line"]),
                f"doc {first['doc_id']!r} is not in the corpus ({len(missing)} unknown doc ids)",
            )
