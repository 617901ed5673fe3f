"""What every `distillm retrieve ENGINE` does around its engine: read the queries, write the
TREC run and `RUN.stats.json` beside it, and log a one-line summary."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)


def stats_path(run_path: str | Path) -> Path:
    """Where the stats of a run go: RUN.stats.json beside RUN."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.name + ".stats.json")


def retrieve_to_files(
    queries_source: str | Path, out: Path, k: int, search: Callable[[dict[str, str]], tuple[pd.DataFrame, dict]]
) -> dict:
    """Load queries (a file or `irds:` id), run `search(queries) -> (run, stats)`, write the
    run to `out` and the stats (with the run and query source named) beside it; returns the stats."""
    from pipeline.contract.queries import load_queries
    from pipeline.contract.run import write_trec_run

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
