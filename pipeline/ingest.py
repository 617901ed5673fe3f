"""Ingestion: bring corpora, queries, qrels and candidate files into the data contract.

distillm ingest corpus SRC --out DIR          # TSV/JSONL file or irds:<id> -> corpus store
distillm ingest queries SRC --out FILE.tsv     # TSV/JSONL file or irds:<id> -> queries TSV
distillm ingest qrels SRC --out FILE           # qrels file or irds:<id> -> qrels
distillm ingest candidates JSON... --out DIR   # rank_llm candidate JSON -> store + queries + runs
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.io.candidates import read_candidates
from pipeline.io.corpus import build_corpus_store
from pipeline.io.queries import write_queries
from pipeline.io.sources import load_passages, load_qrels, load_queries
from pipeline.io.trec import write_qrels, write_trec_run

log = logging.getLogger(__name__)


def ingest_candidates(paths: list[Path], out_dir: Path, tag: str = "bm25") -> dict[str, int]:
    """Split candidate JSON files into a corpus store (their union), all queries
    (`queries.tsv`), and per file `runs/<stem>.run` and `queries/<stem>.tsv`."""
    queries: dict[str, str] = {}
    passages = {}
    counts = {"runs": 0, "hits": 0}
    for path in paths:
        candidates = read_candidates(path, tag=tag)
        for qid, text in candidates.queries.items():
            if queries.setdefault(qid, text) != text:
                raise ValueError(f"{path}: query {qid!r} has a different text in an earlier file")
        for doc_id, passage in candidates.passages.items():
            if passages.setdefault(doc_id, passage).text != passage.text:
                raise ValueError(f"{path}: doc {doc_id!r} has a different text in an earlier file")
        write_trec_run(candidates.run, out_dir / "runs" / f"{path.stem}.run")
        write_queries(candidates.queries, out_dir / "queries" / f"{path.stem}.tsv")
        counts["runs"] += 1
        counts["hits"] += len(candidates.run)
    build_corpus_store(
        ((i, p) for i, p in enumerate(passages.values(), start=1)), out_dir / "corpus", source=",".join(map(str, paths))
    )
    write_queries(queries, out_dir / "queries.tsv")
    counts.update(passages=len(passages), queries=len(queries))
    return counts


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("ingest", help="convert corpora, queries, qrels and candidate files")
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    c = sub.add_parser("corpus", help="build a memory-mapped corpus store")
    c.add_argument("source", help="TSV/JSONL corpus file (.gz ok) or irds:<dataset id>")
    c.add_argument("--out", type=Path, required=True, help="corpus store directory")
    c.set_defaults(func=_corpus)
    q = sub.add_parser("queries", help="write queries as TSV")
    q.add_argument("source", help="TSV/JSONL query file or irds:<dataset id>")
    q.add_argument("--out", type=Path, required=True)
    q.set_defaults(func=_queries)
    r = sub.add_parser("qrels", help="write qrels")
    r.add_argument("source", help="qrels file or irds:<dataset id>")
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(func=_qrels)
    j = sub.add_parser(
        "candidates", help="rank_llm candidate JSON -> corpus store, queries.tsv, runs/<name>.run, queries/<name>.tsv"
    )
    j.add_argument("sources", nargs="+", type=Path)
    j.add_argument("--out", type=Path, required=True, help="output directory")
    j.add_argument("--tag", default="bm25", help="run tag (the first stage that produced the candidates)")
    j.set_defaults(func=_candidates)


def _corpus(args: argparse.Namespace) -> None:
    store = build_corpus_store(load_passages(args.source), args.out, source=args.source)
    log.info("corpus store %s: %d passages", args.out, len(store))


def _queries(args: argparse.Namespace) -> None:
    queries = load_queries(args.source)
    write_queries(queries, args.out)
    log.info("%d queries -> %s", len(queries), args.out)


def _qrels(args: argparse.Namespace) -> None:
    qrels = load_qrels(args.source)
    write_qrels(qrels, args.out)
    log.info("%d judgments for %d queries -> %s", len(qrels), qrels["qid"].nunique(), args.out)


def _candidates(args: argparse.Namespace) -> None:
    counts = ingest_candidates(args.sources, args.out, tag=args.tag)
    log.info("candidates -> %s: %s", args.out, counts)
