"""What every first stage does around its engine (`distillm retrieve ENGINE`): read the queries,
write the TREC run and `RUN.stats.json` beside it, and log a one-line summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

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
