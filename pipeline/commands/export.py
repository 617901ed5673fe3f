"""`distillm export`: the teacher's rankings joined with the first stage, as a Parquet dataset with its card.

    distillm export --first-stage FS.run --teacher T.run --teacher-stats T.run.stats.json \\
        --queries Q.tsv [--corpus STORE --with-text] --out DIR

The flags are `pipeline.dataset.exporter.ExportSettings` (their defaults are its own); the export
is `pipeline.dataset.exporter.export_dataset`.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pipeline.commands import settings_from
from pipeline.dataset.exporter import ExportSettings, export_dataset

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="teacher + first-stage runs -> Parquet dataset with card")
    p.add_argument("--first-stage", type=Path, required=True, help="first-stage TREC run the teacher re-ranked")
    p.add_argument("--teacher", type=Path, required=True, help="teacher TREC run (distillm rerank, or any other)")
    p.add_argument(
        "--teacher-stats", type=Path, help="the teacher's stats JSON of distillm rerank (provenance.depth ...)"
    )
    p.add_argument("--teacher-model", help="without --teacher-stats: the model that ranked the teacher run")
    p.add_argument(
        "--teacher-depth", type=int, help="without --teacher-stats: ranks re-ranked per query (default: all)"
    )
    p.add_argument("--teacher-prompt", help="without --teacher-stats: the prompt or method, for the card")
    p.add_argument("--teacher-source", help="where the teacher run comes from (URL, DOI, citation), for the card")
    p.add_argument("--queries", required=True, help="queries file or irds:<id>")
    p.add_argument("--corpus", type=Path, help="corpus store: checks doc ids; with --with-text adds a text column")
    p.add_argument("--with-text", action="store_true", help="add the passage text (MS MARCO's licence terms apply)")
    p.add_argument("--out", type=Path, required=True, help="output directory (replaced if it is an earlier export)")
    p.add_argument("--name", help="dataset name (default rank-distillm-TEACHER-FIRSTSTAGE)")
    p.add_argument(
        "--shard-rows", type=int, default=ExportSettings.shard_rows, help="rows per Parquet shard (whole queries)"
    )
    p.add_argument("--first-stage-name", help="first stage name (default: the first-stage run's tag)")
    p.add_argument("--teacher-name", help="teacher name (default: the teacher run's tag)")
    p.add_argument(
        "--dataset-id",
        help="ir_datasets id of the queries, e.g. msmarco-passage/train/judged: names the lightning-ir .run "
        "(default: the id of irds:<id> queries; none: no .run, a warning)",
    )
    p.add_argument("--sample-label", help="query-sample label in the run name (default: the number of queries)")
    p.add_argument("--license", default=ExportSettings.license, help="licence id for the card and Zenodo")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    metadata = export_dataset(settings_from(ExportSettings, args))
    seconds = time.perf_counter() - started
    log.info(
        "dataset %s: %d queries, %d rows in %d shard(s) -> %s (%.1f s)",
        metadata["name"],
        metadata["queries"],
        metadata["rows"],
        len(metadata["shards"]),
        args.out,
        seconds,
    )
    return 0
