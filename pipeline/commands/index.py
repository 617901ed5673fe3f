"""`distillm index ENGINE`: build a first stage's index from a corpus store.

    distillm index bm25 --corpus STORE --index DIR [--threads N]
    distillm index bm25 --prebuilt msmarco-v1-passage --index DIR      # needs internet
    distillm index colbert --corpus STORE --checkpoint CKPT --index DIR [--nbits 2 --doc-maxlen 180 --kmeans-niters 4]

The engines are `pipeline.first_stage.bm25` (Pyserini) and `pipeline.first_stage.colbert` (PLAID);
the flags' defaults are their `build_index`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands import defaults
from pipeline.first_stage import bm25, colbert


def register(subparsers: argparse._SubParsersAction) -> None:
    engines = subparsers.add_parser("index", help="build a first-stage index").add_subparsers(
        dest="engine", required=True, metavar="ENGINE"
    )
    p = engines.add_parser("bm25", help="build a Lucene BM25 index with Pyserini")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="corpus store directory (from `distillm ingest corpus`)")
    source.add_argument(
        "--prebuilt",
        metavar="NAME",
        help="Pyserini prebuilt index, e.g. msmarco-v1-passage (downloads: needs internet)",
    )
    p.add_argument("--index", type=Path, required=True, help="index directory to write (replaced if it exists)")
    p.add_argument("--threads", type=int, help="indexing threads (default: all cores)")
    p.set_defaults(func=run_bm25)

    d = defaults(colbert.build_index)
    c = engines.add_parser("colbert", help="build a ColBERTv2 PLAID index with colbert-ai")
    c.add_argument("--corpus", type=Path, required=True, help="corpus store directory (from `distillm ingest corpus`)")
    c.add_argument(
        "--checkpoint", required=True, help="hub id (e.g. colbert-ir/colbertv2.0, needs internet once) or local folder"
    )
    c.add_argument("--index", type=Path, required=True, help="index directory to write (replaced if it exists)")
    c.add_argument(
        "--nbits", type=int, default=d.nbits, choices=(1, 2, 4), help=f"bits per dimension (default {d.nbits})"
    )
    c.add_argument("--doc-maxlen", type=int, default=d.doc_maxlen, help=f"passage tokens kept (default {d.doc_maxlen})")
    c.add_argument(
        "--kmeans-niters", type=int, default=d.kmeans_niters, help=f"k-means iterations (default {d.kmeans_niters})"
    )
    colbert_runtime_flags(c, d.stall_seconds)
    c.set_defaults(func=run_colbert)


def colbert_runtime_flags(parser: argparse.ArgumentParser, stall_seconds: float) -> None:
    """How colbert-ai runs, for indexing and search alike: its threads and its watchdog."""
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's default, all cores)")
    parser.add_argument(
        "--stall-timeout",
        dest="stall_seconds",
        type=float,
        default=stall_seconds,
        metavar="SECONDS",
        help=f"stop with an error after this long without CPU progress (default {stall_seconds:.0f}; 0: never)",
    )


def run_bm25(args: argparse.Namespace) -> int:
    if args.prebuilt:
        bm25.fetch_prebuilt(args.prebuilt, args.index)
    else:
        bm25.build_index(args.corpus, args.index, threads=args.threads)
    return 0


def run_colbert(args: argparse.Namespace) -> int:
    colbert.build_index(
        args.corpus,
        args.index,
        args.checkpoint,
        nbits=args.nbits,
        doc_maxlen=args.doc_maxlen,
        kmeans_niters=args.kmeans_niters,
        threads=args.threads,
        stall_seconds=args.stall_seconds,
    )
    return 0
