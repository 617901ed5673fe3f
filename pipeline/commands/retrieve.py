"""`distillm retrieve ENGINE`: a first stage's top-k of every query -> a TREC run and its stats.

    distillm retrieve bm25 --index DIR --queries Q --out RUN [--k 100 --k1 0.9 --b 0.4 --threads N --tag bm25]
    distillm retrieve colbert --index DIR --queries Q --out RUN [--k 100 --ncells 8
        --centroid-score-threshold 0.35 --ndocs 8192 --tag colbert]

Each engine's `retrieve` searches (`pipeline.first_stage.bm25`, `pipeline.first_stage.colbert`;
the flags' defaults are its own); around it, every engine alike, the queries are read and the run
and `RUN.stats.json` written (`pipeline.first_stage.retrieval.retrieve_to_files`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands import defaults
from pipeline.commands.index import colbert_runtime_flags
from pipeline.first_stage import bm25, colbert
from pipeline.first_stage.retrieval import retrieve_to_files

# the flags each engine's `retrieve` takes (besides the index and the queries)
SEARCH_FLAGS = {
    "bm25": ("k", "k1", "b", "threads", "tag", "batch_size"),
    "colbert": (
        "k",
        "ncells",
        "centroid_score_threshold",
        "ndocs",
        "checkpoint",
        "tag",
        "batch_size",
        "threads",
        "stall_seconds",
    ),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    engines = subparsers.add_parser("retrieve", help="retrieve a TREC run with a first stage").add_subparsers(
        dest="engine", required=True, metavar="ENGINE"
    )
    d = defaults(bm25.retrieve)
    r = engines.add_parser("bm25", help="BM25 top-k per query from a Lucene index -> TREC run")
    common_flags(r, "bm25", d.k)
    r.add_argument("--k1", type=float, default=d.k1, help=f"BM25 k1 (default {d.k1})")
    r.add_argument("--b", type=float, default=d.b, help=f"BM25 b (default {d.b})")
    r.add_argument("--threads", type=int, help="search threads (default: all cores)")
    r.add_argument("--tag", default=d.tag, help=f"run tag naming the first stage (default {d.tag})")
    r.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"queries per batch_search call (default {d.batch_size})"
    )
    r.set_defaults(func=run)

    d = defaults(colbert.retrieve)
    c = engines.add_parser("colbert", help="ColBERTv2 PLAID top-k per query -> TREC run")
    common_flags(c, "colbert", d.k)
    c.add_argument(
        "--ncells", type=int, default=d.ncells, help=f"centroids probed per query token (default {d.ncells})"
    )
    c.add_argument(
        "--centroid-score-threshold",
        type=float,
        default=d.centroid_score_threshold,
        help=f"centroid pruning threshold (default {d.centroid_score_threshold})",
    )
    c.add_argument(
        "--ndocs", type=int, default=d.ndocs, help=f"candidates scored approximately, >= 4 k (default {d.ndocs})"
    )
    c.add_argument("--checkpoint", help="query encoder (default: the checkpoint the index was built with)")
    c.add_argument("--tag", default=d.tag, help=f"run tag naming the first stage (default {d.tag})")
    c.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"queries encoded per batch (default {d.batch_size})"
    )
    colbert_runtime_flags(c, d.stall_seconds)
    c.set_defaults(func=run)


def common_flags(parser: argparse.ArgumentParser, engine: str, k: int) -> None:
    parser.add_argument("--index", type=Path, required=True, help=f"index directory (from `distillm index {engine}`)")
    parser.add_argument("--queries", required=True, help="queries TSV/JSONL or irds:<dataset id>")
    parser.add_argument("--out", type=Path, required=True, help="TREC run to write; stats go to RUN.stats.json")
    parser.add_argument("--k", type=int, default=k, help=f"hits per query (default {k})")


def run(args: argparse.Namespace) -> int:
    engine = {"bm25": bm25, "colbert": colbert}[args.engine]
    options = {name: getattr(args, name) for name in SEARCH_FLAGS[args.engine]}
    retrieve_to_files(args.queries, args.out, args.k, lambda queries: engine.retrieve(args.index, queries, **options))
    return 0
