"""What every first stage does around its engine (`distillm retrieve ENGINE`): read the queries,
write the TREC run and `RUN.stats.json` beside it, and log a one-line summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.contract.run import run_frame, strictly_decreasing
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)


def retrieve_to_files(
    queries_source: str | Path, out: Path, k: int, search: Callable[[dict[str, str]], tuple[pd.DataFrame, dict]]
) -> dict:
    """Load queries (a file or `irds:` id), run `search(queries) -> (run, stats)`, write the
    run to `out` and the stats (with the run and query source named) beside it; returns the stats."""
    from pipeline.contract.queries import load_queries
    from pipeline.contract.run import stats_path, write_trec_run

    queries = load_queries(queries_source)
    if not queries:
        raise InputError(queries_source, None, "no queries")
    run, stats = search(queries)
    write_trec_run(run, out)
    stats = {"run": str(out), "queries_source": str(queries_source), **stats}
    stats_path(out).write_text(json.dumps(stats, indent=2) + "\n")
    log.info(
        "%s: %d queries, %d hits, %.1f queries/s (%d with fewer than %d hits)",
        out,
        stats["queries"],
        stats["hits"],
        stats["queries_per_second"] or 0.0,
        stats["queries_with_fewer_than_k_hits"],
        k,
    )
    return stats


def check_k(k: int, batch_size: int) -> None:
    """ValueError unless the hits per query and the queries per batch are positive."""
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch size must be positive (k={k}, batch size={batch_size})")


def check_run_names(tag: str, queries: dict[str, str]) -> None:
    """ValueError for a run tag or a query id a TREC run cannot hold (empty, or with whitespace)."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be non-empty without whitespace: {tag!r}")
    spaced = next((q for q in queries if any(c.isspace() for c in q)), None)
    if spaced is not None:
        raise ValueError(f"query id {spaced!r} contains whitespace (a TREC run cannot hold it)")


class Hits:
    """A first stage's hits as they come, query by query, made into a run: ranks 1.., scores that
    strictly decrease (equal neighbours separated by one float step, counted), the queries with
    fewer than k hits and without any noted."""

    def __init__(self, k: int):
        self.k = k
        self.qids: list[str] = []
        self.doc_ids: list[str] = []
        self.ranks: list[int] = []
        self.scores: list[float] = []
        self.short: list[str] = []  # queries with fewer than k hits
        self.empty: list[str] = []  # queries without any hit
        self.ties_separated = 0

    def add(self, qid: str, doc_ids: list[str], scores: list[float]) -> None:
        """One query's hits in ranking order."""
        scores = list(scores)
        self.ties_separated += strictly_decreasing(scores)
        self.qids += [qid] * len(doc_ids)
        self.doc_ids += doc_ids
        self.ranks += range(1, len(doc_ids) + 1)
        self.scores += scores
        if len(doc_ids) < self.k:
            self.short.append(qid)
        if not doc_ids:
            self.empty.append(qid)

    def run(self, tag: str) -> pd.DataFrame:
        """The run frame (RUN_COLUMNS, queries in the order added)."""
        return run_frame(self.qids, self.doc_ids, self.ranks, self.scores, tag)

    def stats(self, queries: int, seconds: float, **counts: Any) -> dict[str, Any]:
        """The stats every first stage starts with: queries, k, hits, the short queries, then
        `counts` (the engine's own), the ties separated, the time and the throughput."""
        return {
            "queries": queries,
            "k": self.k,
            "hits": len(self.qids),
            "queries_with_fewer_than_k_hits": len(self.short),
            **counts,
            "ties_separated": self.ties_separated,
            "seconds": round(seconds, 3),
            "queries_per_second": round(queries / seconds, 1) if seconds > 0 else None,
        }
