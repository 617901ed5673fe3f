"""Ingestion: bring corpora, queries, qrels, candidate files and runs into the data contract.

    ingest_corpus(SRC, DIR)                      # TSV/JSONL file or irds:<id> -> corpus store
    ingest_queries(SRC, FILE.tsv, sample, seed)  # file or irds:<id> -> queries TSV
    ingest_qrels(SRC, FILE, queries)             # file or irds:<id> -> qrels
    ingest_candidates([JSON, ...], DIR, tag, corpus)  # rank_llm candidate JSON -> store + queries + runs
    ingest_run(RUN, STORE, FILE, queries, known_only, tag)  # any TREC run -> a checked run

(`distillm ingest ...`, `pipeline.commands.ingest`; rank_llm's recorded replies, `ingest replies`,
are the teacher's: `pipeline.teacher.recorded_replies`.)

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

import json
import logging
import random
from pathlib import Path

from pipeline.contract.candidates import read_candidates
from pipeline.contract.corpus import CorpusStore, build_corpus_store, load_passages
from pipeline.contract.qrels import load_qrels, write_qrels
from pipeline.contract.queries import load_queries, read_queries, write_queries
from pipeline.contract.run import ranked_lists, read_trec_run, run_from_lists, stats_path, write_trec_run
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
    stats_path(out).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def sample_queries(queries: dict[str, str], n: int, seed: int = 0) -> dict[str, str]:
    """n queries drawn without replacement (seeded), kept in their original order; n <= 0 or >= len: all."""
    if n <= 0 or n >= len(queries):
        return dict(queries)
    keep = set(random.Random(seed).sample(sorted(queries), n))
    return {qid: text for qid, text in queries.items() if qid in keep}


def ingest_corpus(source: str | Path, out: Path) -> CorpusStore:
    """A corpus store at `out` from a corpus file or `irds:` id."""
    store = build_corpus_store(load_passages(source), out, source=source)
    log.info("corpus store %s: %d passages", out, len(store))
    return store


def ingest_queries(source: str | Path, out: Path, sample: int = 0, seed: int = 0) -> dict[str, str]:
    """The queries of a file or `irds:` id as TSV at `out`: all, or `sample` of them (seeded)."""
    queries = load_queries(source)
    kept = sample_queries(queries, sample, seed)
    write_queries(kept, out)
    log.info("%d of %d queries -> %s", len(kept), len(queries), out)
    return kept


def ingest_qrels(source: str | Path, out: Path, queries: Path | None = None) -> None:
    """The qrels of a file or `irds:` id at `out`; with `queries`, only the judgments of those queries."""
    qrels = load_qrels(source)
    if queries is not None:
        qrels = qrels[qrels["qid"].isin(set(read_queries(queries)))]
    write_qrels(qrels, out)
    log.info("%d judgments for %d queries -> %s", len(qrels), qrels["qid"].nunique(), out)
