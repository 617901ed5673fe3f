"""`distillm ingest WHAT`: corpora, queries, qrels, candidate files, runs and recorded replies -> the data contract.

    distillm ingest corpus SRC --out DIR          # TSV/JSONL file or irds:<id> -> corpus store
    distillm ingest queries SRC --out FILE.tsv [--sample N --seed S]   # file or irds:<id> -> queries TSV
    distillm ingest qrels SRC --out FILE [--queries FILE.tsv]           # file or irds:<id> -> qrels
    distillm ingest candidates JSON... --out DIR [--corpus SRC]   # rank_llm candidate JSON -> store + queries + runs
    distillm ingest run RUN --corpus STORE --out FILE [--queries Q] [--known-only]  # any TREC run -> a checked run
    distillm ingest replies DUMP --run RUN --queries Q --corpus STORE --prompt P --model M --out LOG
                                                  # rank_llm's recorded prompts/replies -> reply log

The work is `pipeline.ingestion`'s; `ingest replies` is the teacher's
(`pipeline.teacher.recorded_replies`: its window settings' defaults are `TeacherSettings`'s).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline import ingestion
from pipeline.commands import defaults
from pipeline.teacher.settings import TeacherSettings

log = logging.getLogger(__name__)


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
    d = defaults(ingestion.ingest_queries)
    q.add_argument(
        "--sample",
        type=int,
        default=d.sample,
        help=f"keep this many queries, drawn at random (default {d.sample}: all)",
    )
    q.add_argument("--seed", type=int, default=d.seed, help=f"seed of --sample (default {d.seed})")
    q.set_defaults(func=_queries)
    r = sub.add_parser("qrels", help="write qrels")
    r.add_argument("source", help="qrels file or irds:<dataset id>")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--queries", type=Path, help="keep only the judgments of the queries in this TSV")
    r.set_defaults(func=_qrels)
    j = sub.add_parser(
        "candidates", help="rank_llm candidate JSON -> corpus store, queries.tsv, runs/<name>.run, queries/<name>.tsv"
    )
    j.add_argument("sources", nargs="+", type=Path)
    j.add_argument("--out", type=Path, required=True, help="output directory")
    j.add_argument(
        "--tag",
        default=defaults(ingestion.ingest_candidates).tag,
        help="run tag (the first stage that produced the candidates)",
    )
    j.add_argument(
        "--corpus",
        default="candidates",
        help="corpus of the store: 'candidates' (their passages, default) or a corpus file or irds:<id>",
    )
    j.set_defaults(func=_candidates)
    u = sub.add_parser("run", help="a TREC run made elsewhere -> a run checked against the corpus store")
    u.add_argument("source", type=Path, help="TREC run file (.gz ok)")
    u.add_argument("--corpus", type=Path, required=True, help="corpus store its passages must be in")
    u.add_argument("--queries", help="keep only the queries of this file (or irds:<id>); the others are counted")
    u.add_argument(
        "--known-only",
        action="store_true",
        help="drop (and count) passages that are not in the corpus store instead of stopping",
    )
    u.add_argument("--tag", help="run tag of the output (default: the source's)")
    u.add_argument("--out", type=Path, required=True, help="run to write (+ .stats.json)")
    u.set_defaults(func=_run)
    _register_replies(sub)


def _run(args: argparse.Namespace) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stats = ingestion.ingest_run(args.source, args.corpus, args.out, args.queries, args.known_only, args.tag)
    log.info("run %s -> %s: %s", args.source, args.out, stats)


def _register_replies(sub: argparse._SubParsersAction) -> None:
    """`ingest replies`: pipeline.teacher.recorded_replies (imported when the command runs)."""
    p = sub.add_parser(
        "replies", help="rank_llm's recorded prompts and replies (prompts_responses_*.json) -> a reply log for replay"
    )
    p.add_argument("dump", type=Path, help="rank_llm's prompts-and-responses file")
    p.add_argument("--run", type=Path, required=True, help="the first-stage run the recorded teacher re-ranked")
    p.add_argument("--queries", required=True, help="queries file or irds:<id>")
    p.add_argument("--corpus", type=Path, required=True, help="corpus store (distillm ingest corpus/candidates)")
    p.add_argument("--prompt", required=True, help="prompt template the recorded prompts were built with")
    p.add_argument("--model", required=True, help="the model that wrote the replies (provenance)")
    p.add_argument("--depth", type=int, default=TeacherSettings.depth)
    p.add_argument("--window", type=int, default=TeacherSettings.window)
    p.add_argument("--stride", type=int, default=TeacherSettings.stride)
    p.add_argument(
        "--max-words", type=int, default=TeacherSettings.max_words, help="words per passage in the recorded prompts"
    )
    p.add_argument("--max-queries", type=int, default=0, help="only the first N queries of the run (0: all)")
    p.add_argument("--partial", action="store_true", help="accept a dump that covers only part of the run")
    p.add_argument("--out", type=Path, required=True, help="reply log to write (+ .settings.json)")
    p.set_defaults(func=_replies)


def _replies(args: argparse.Namespace) -> int:
    from pipeline.teacher.recorded_replies import ingest_files

    counts = ingest_files(
        args.dump,
        args.run,
        args.queries,
        args.corpus,
        args.prompt,
        args.model,
        args.out,
        args.depth,
        args.window,
        args.stride,
        args.max_words,
        args.max_queries,
        args.partial,
    )
    print(json.dumps(counts))
    return 0


def _corpus(args: argparse.Namespace) -> None:
    ingestion.ingest_corpus(args.source, args.out)


def _queries(args: argparse.Namespace) -> None:
    ingestion.ingest_queries(args.source, args.out, args.sample, args.seed)


def _qrels(args: argparse.Namespace) -> None:
    ingestion.ingest_qrels(args.source, args.out, args.queries)


def _candidates(args: argparse.Namespace) -> None:
    corpus = None if args.corpus == "candidates" else args.corpus
    counts = ingestion.ingest_candidates(args.sources, args.out, tag=args.tag, corpus=corpus)
    log.info("candidates -> %s: %s", args.out, counts)
