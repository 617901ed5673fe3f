"""Ingestion: bring corpora, queries, qrels and candidate files into the data contract.

distillm ingest corpus SRC --out DIR          # TSV/JSONL file or irds:<id> -> corpus store
distillm ingest queries SRC --out FILE.tsv [--sample N --seed S]   # file or irds:<id> -> queries TSV
distillm ingest qrels SRC --out FILE [--queries FILE.tsv]           # file or irds:<id> -> qrels
distillm ingest candidates JSON... --out DIR [--corpus SRC]   # rank_llm candidate JSON -> store + queries + runs
distillm ingest run RUN --corpus STORE --out FILE [--queries Q] [--known-only]  # any TREC run -> a checked run
distillm ingest replies DUMP --run RUN --queries Q --corpus STORE --prompt P --model M --out LOG
                                              # rank_llm's recorded prompts/replies -> reply log

`ingest candidates` builds the corpus store from the candidates' own passages (their union,
the demo) or, with `--corpus SRC`, from a full corpus (the paper: irds:msmarco-passage), in
which every candidate must then exist. `ingest queries --sample N` keeps N queries drawn
at random (seeded), in their source order: the paper's 10k MS MARCO training queries.
`ingest run` brings a run made elsewhere (another first stage, a published teacher's
rankings) into the contract: every passage must be in the corpus store (or, with
`--known-only`, passages without text are dropped and counted: a documented repair), ranks
are renumbered 1.. in the run's own order (rank, then higher score, then file order; ranks
from 0 are fine) and `FILE.stats.json` says what was kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

from pipeline.contract.candidates import read_candidates
from pipeline.contract.corpus import CorpusStore, build_corpus_store, load_passages
from pipeline.contract.qrels import load_qrels, write_qrels
from pipeline.contract.queries import load_queries, read_queries, write_queries
from pipeline.contract.run import ranked_lists, read_trec_run, run_from_lists, write_trec_run
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)


def ingest_candidates(
    paths: list[Path], out_dir: Path, tag: str = "bm25", corpus: str | Path | None = None
) -> dict[str, int]:
    """Split candidate JSON files into a corpus store, all queries (`queries.tsv`), and per
    file `runs/<stem>.run` and `queries/<stem>.tsv`.

    The store holds the candidates' passages (their union), or with `corpus` (a file or
    `irds:` id) that whole corpus; then a candidate missing from it is an InputError and
    candidates whose text differs from the corpus's are counted (`text_differs`) and logged:
    the corpus text is the one kept.
    """
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
    if corpus is None:
        source = ",".join(map(str, paths))
        build_corpus_store(
            ((i, p) for i, p in enumerate(passages.values(), start=1)), out_dir / "corpus", source=source
        )
        counts["text_differs"] = 0
    else:
        counts["text_differs"] = _check_candidates_in_corpus(corpus, passages, out_dir / "corpus", paths)
    write_queries(queries, out_dir / "queries.tsv")
    counts.update(passages=len(passages), queries=len(queries), corpus=len(CorpusStore(out_dir / "corpus")))
    return counts


def _check_candidates_in_corpus(corpus: str | Path, passages: dict, store_dir: Path, paths: list[Path]) -> int:
    """Build the store from `corpus`; every candidate must be in it. Returns how many texts differ."""
    store = build_corpus_store(load_passages(corpus), store_dir, source=str(corpus))
    doc_ids = list(passages)
    missing = store.missing(doc_ids)
    if missing:
        raise InputError(
            paths[0] if len(paths) == 1 else ", ".join(map(str, paths)),
            None,
            f"{len(missing)} candidate passages are not in the corpus {corpus} (first: {missing[:5]})",
        )
    differs = [p.doc_id for p, q in zip(store.passages(doc_ids), passages.values(), strict=True) if p.text != q.text]
    if differs:
        log.warning(
            "%d candidate passages have another text in %s (the corpus text is kept): %s",
            len(differs),
            corpus,
            ", ".join(differs[:5]),
        )
    return len(differs)


def ingest_run(
    source: str | Path,
    corpus: str | Path,
    out: Path,
    queries: str | Path | None = None,
    known_only: bool = False,
    tag: str | None = None,
) -> dict:
    """A run checked against the corpus store (and the queries), renumbered 1.. in its own order.

    A passage missing from the corpus is an InputError naming its line, unless known_only: then
    it is dropped and counted. With `queries`, queries not in that file are dropped and counted.
    Returns the stats (also written to `OUT.stats.json`).
    """
    run = read_trec_run(source)
    store = CorpusStore(corpus)
    dropped_queries = 0
    if queries is not None:
        wanted = set(load_queries(queries))
        keep = run["qid"].isin(wanted)
        dropped_queries = int(run.loc[~keep, "qid"].nunique())
        run = run[keep]
        if run.empty:
            raise InputError(source, None, f"none of its queries is in {queries}")
    unknown = set(store.missing(sorted(set(run["doc_id"]))))
    if unknown and not known_only:
        first = run[run["doc_id"].isin(unknown)].iloc[0]
        raise InputError(
            source,
            int(first["line"]),
            f"doc {first['doc_id']!r} is not in the corpus {corpus} ({len(unknown)} unknown doc ids; "
            "--known-only drops them and counts them)",
        )
    kept = run[~run["doc_id"].isin(unknown)]
    lists = ranked_lists(kept)
    write_trec_run(run_from_lists(lists, tag or str(run["tag"].iloc[0])), out)
    per_query = {qid: len(docs) for qid, docs in lists.items()}
    stats = {
        "source": str(source),
        "corpus": str(corpus),
        "queries": len(lists),
        "hits": len(kept),
        "hits_in_source": len(run),
        "dropped_unknown_docs": len(run) - len(kept),
        "kept_fraction": round(len(kept) / len(run), 4),
        "dropped_queries": dropped_queries,
        "queries_without_known_docs": int(run["qid"].nunique()) - len(lists),
        "min_hits_per_query": min(per_query.values()),
        "max_hits_per_query": max(per_query.values()),
    }
    Path(f"{out}.stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def sample_queries(queries: dict[str, str], n: int, seed: int = 0) -> dict[str, str]:
    """n queries drawn without replacement (seeded), kept in their original order; n <= 0 or >= len: all."""
    if n <= 0 or n >= len(queries):
        return dict(queries)
    keep = set(random.Random(seed).sample(sorted(queries), n))
    return {qid: text for qid, text in queries.items() if qid in keep}


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
    q.add_argument("--sample", type=int, default=0, help="keep this many queries, drawn at random (default 0: all)")
    q.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
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
    j.add_argument("--tag", default="bm25", help="run tag (the first stage that produced the candidates)")
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
    stats = ingest_run(args.source, args.corpus, args.out, args.queries, args.known_only, args.tag)
    log.info("run %s -> %s: %s", args.source, args.out, stats)


def _register_replies(sub: argparse._SubParsersAction) -> None:
    """`ingest replies`: pipeline.teacher.rank_llm_dump (imported when the command runs)."""
    p = sub.add_parser(
        "replies", help="rank_llm's recorded prompts and replies (prompts_responses_*.json) -> a reply log for replay"
    )
    p.add_argument("dump", type=Path, help="rank_llm's prompts-and-responses file")
    p.add_argument("--run", type=Path, required=True, help="the first-stage run the recorded teacher re-ranked")
    p.add_argument("--queries", required=True, help="queries file or irds:<id>")
    p.add_argument("--corpus", type=Path, required=True, help="corpus store (distillm ingest corpus/candidates)")
    p.add_argument("--prompt", required=True, help="prompt template the recorded prompts were built with")
    p.add_argument("--model", required=True, help="the model that wrote the replies (provenance)")
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--max-words", type=int, default=300, help="words per passage in the recorded prompts")
    p.add_argument("--max-queries", type=int, default=0, help="only the first N queries of the run (0: all)")
    p.add_argument("--partial", action="store_true", help="accept a dump that covers only part of the run")
    p.add_argument("--out", type=Path, required=True, help="reply log to write (+ .settings.json)")
    p.set_defaults(func=_replies)


def _replies(args: argparse.Namespace) -> int:
    from pipeline.teacher.rank_llm_dump import main

    return main(args)


def _corpus(args: argparse.Namespace) -> None:
    store = build_corpus_store(load_passages(args.source), args.out, source=args.source)
    log.info("corpus store %s: %d passages", args.out, len(store))


def _queries(args: argparse.Namespace) -> None:
    queries = load_queries(args.source)
    kept = sample_queries(queries, args.sample, args.seed)
    write_queries(kept, args.out)
    log.info("%d of %d queries -> %s", len(kept), len(queries), args.out)


def _qrels(args: argparse.Namespace) -> None:
    qrels = load_qrels(args.source)
    if args.queries is not None:
        qrels = qrels[qrels["qid"].isin(set(read_queries(args.queries)))]
    write_qrels(qrels, args.out)
    log.info("%d judgments for %d queries -> %s", len(qrels), qrels["qid"].nunique(), args.out)


def _candidates(args: argparse.Namespace) -> None:
    corpus = None if args.corpus == "candidates" else args.corpus
    counts = ingest_candidates(args.sources, args.out, tag=args.tag, corpus=corpus)
    log.info("candidates -> %s: %s", args.out, counts)
