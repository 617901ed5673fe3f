"""Cross-file checks: a run may only name queries and passages that exist."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.infra.errors import InputError
from pipeline.io.corpus import CorpusStore
from pipeline.io.sources import load_queries
from pipeline.io.trec import ranked_lists, read_trec_run

Lists = dict[str, list[str]]


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


def read_rerank_inputs(
    run_path: str | Path,
    queries_spec: str | Path,
    corpus_path: str | Path,
    max_queries: int = 0,
) -> tuple[pd.DataFrame, Lists, dict[str, str], CorpusStore]:
    """What a re-ranker reads: the run, its ranked lists, the queries and the corpus store.

    Keeps the first `max_queries` queries of the run (0: all) and cuts the run to them; every
    query and passage it names is checked (InputError at the first bad line) before any model loads.
    """
    run = read_trec_run(run_path)
    queries = load_queries(queries_spec)
    corpus = CorpusStore(corpus_path)
    lists = ranked_lists(run)
    if max_queries:
        lists = dict(list(lists.items())[:max_queries])
    run = run[run["qid"].isin(lists.keys())]
    check_run_references(run, run_path, queries, corpus)
    return run, lists, queries, corpus
