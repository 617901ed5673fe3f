"""BM25 first stage with Pyserini (Anserini on Lucene): corpus store -> Lucene index -> TREC run.

    distillm index bm25 --corpus STORE --index DIR [--threads N]
    distillm index bm25 --prebuilt msmarco-v1-passage --index DIR      # needs internet
    distillm retrieve bm25 --index DIR --queries Q --out RUN [--k 100 --k1 0.9 --b 0.4 --threads N --tag bm25]

(the commands: `pipeline.commands.index`, `pipeline.commands.retrieve`)

Indexing streams the store into JsonCollection shards (`{"id", "contents"}`, contents =
title + " " + text when there is a title) and runs Anserini's multi-threaded indexer with
its default analyzer (Lucene's English stop words, Porter stemming), merged into one
segment. The index is built in DIR.tmp and renamed into place; `DIR/distillm.json`
records where it came from.

Retrieval is Pyserini's `batch_search` in batches of queries (for the progress bar), with
BM25 k1=0.9, b=0.4 by default (Pyserini's MS MARCO passage setting). Anserini rounds
scores to 4 decimals and separates equal ones by steps of 1e-6, so scores strictly
decrease with rank as the data contract asks. `RUN.stats.json` counts the queries with fewer than
k hits. A query whose text is empty after analysis (only stop words or punctuation) gets
no hits: it is logged, counted and left out of the run, which stays valid.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import pandas as pd

from pipeline.contract.corpus import CorpusStore
from pipeline.first_stage.index_folder import finish_index, read_provenance
from pipeline.first_stage.java import java_message, runtime_versions, start_jvm
from pipeline.first_stage.retrieval import Hits, check_k, check_run_names
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)

INDEX_FORMAT = "distillm-bm25/1"
K1, B = 0.9, 0.4  # Pyserini's BM25 setting for MS MARCO passage
ANALYZER = "Anserini default: Lucene English stop words, Porter stemmer"


def default_threads() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------------------- indexing


def build_index(corpus: str | Path, index_dir: str | Path, threads: int | None = None, progress: bool = True) -> dict:
    """Build a Lucene BM25 index of a corpus store in index_dir; returns the provenance record."""
    store = CorpusStore(corpus)
    threads = threads or default_threads()
    index_dir = Path(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_dir.with_name(index_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # Beside the index, not in /tmp: the shards of MS MARCO take a few GB.
    collection = Path(tempfile.mkdtemp(prefix=f".{index_dir.name}.collection-", dir=index_dir.parent))
    started = time.perf_counter()
    try:
        shards = write_json_collection(store, collection, shards=4 * threads, progress=progress)
        log.info("indexing %d passages (%d shards) with %d threads", len(store), shards, threads)
        counters = _run_indexer(collection, tmp, threads)
        if counters["indexed"] != len(store):
            raise RuntimeError(f"Anserini indexed {counters['indexed']} of {len(store)} passages: {counters}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(collection, ignore_errors=True)
    seconds = time.perf_counter() - started
    provenance = {
        "format": INDEX_FORMAT,
        "corpus": str(Path(corpus).resolve()),
        "corpus_source": store.meta.get("source"),
        "count": len(store),
        "counters": counters,
        "settings": {
            "contents": "title + ' ' + text" if store.has_title else "text",
            "analyzer": ANALYZER,
            "collection": "JsonCollection",
            "generator": "DefaultLuceneDocumentGenerator",
            "optimize": True,
            "threads": threads,
        },
        "seconds": round(seconds, 3),
        "passages_per_second": round(len(store) / seconds, 1),
        "versions": runtime_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    finish_index(tmp, index_dir, provenance)
    log.info("index %s: %d passages in %.1f s", index_dir, len(store), seconds)
    return provenance


def write_json_collection(store: CorpusStore, out_dir: Path, shards: int, progress: bool = True) -> int:
    """Write the store as JsonCollection files `{"id", "contents"}`; returns the number of files.

    Anserini indexes one file per thread, so there are at least `shards` files (more when
    the store's Arrow batches split them).
    """
    from tqdm import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = max(1, math.ceil(len(store) / shards))
    n = 0
    with tqdm(total=len(store), desc="bm25 collection", unit=" passages", disable=not progress) as bar:
        for n, batch in enumerate(store.iter_batches(rows), start=1):
            columns = [batch.column(c).to_pylist() for c in ("doc_id", "text", "title")]
            with open(out_dir / f"part-{n:05d}.jsonl", "w", encoding="utf-8") as f:
                for doc_id, text, title in zip(*columns, strict=True):
                    contents = text if title is None else f"{title} {text}"
                    f.write(json.dumps({"id": doc_id, "contents": contents}) + "\n")
            bar.update(batch.num_rows)
    return n


def _run_indexer(collection: Path, index_dir: Path, threads: int) -> dict[str, int]:
    """Anserini's IndexCollection over a JsonCollection directory; returns its counters."""
    start_jvm()
    from jnius import JavaException, autoclass

    args = autoclass("io.anserini.index.IndexCollection$Args")()
    args.collectionClass = "JsonCollection"
    args.generatorClass = "DefaultLuceneDocumentGenerator"
    args.input = str(collection)
    args.index = str(index_dir)
    args.threads = threads
    args.optimize = True  # one segment: fastest search
    args.quiet = True
    # Anserini's 4 GB indexing buffer must fit in the heap (the JVM takes 1/4 of RAM by default).
    heap_mb = autoclass("java.lang.Runtime").getRuntime().maxMemory() // 2**20
    args.memoryBuffer = int(min(4096, heap_mb // 2))
    try:
        indexer = autoclass("io.anserini.index.IndexCollection")(args)
        indexer.run()
    except JavaException as e:
        raise RuntimeError(f"Anserini indexing failed: {java_message(e)}") from None
    counters = indexer.getCounters()
    return {
        name: int(getattr(counters, name).get()) for name in ("indexed", "empty", "unindexable", "skipped", "errors")
    }


def fetch_prebuilt(name: str, index_dir: str | Path) -> dict:
    """Download a Pyserini prebuilt Lucene index (e.g. msmarco-v1-passage) into index_dir.

    The files are hard-linked from Pyserini's cache (~/.cache/pyserini, or $PYSERINI_CACHE)
    where possible, else copied. Offline, Pyserini cannot download and this raises InputError.
    `retrieve` analyzes queries with Anserini's default English analyzer, so take an index
    built with it (msmarco-v1-passage, beir-v1.0.0-*.flat, ...).
    """
    start_jvm()
    from pyserini.prebuilt_index_info import TF_INDEX_INFO

    if name not in TF_INDEX_INFO:
        raise InputError(name, None, "not a Pyserini prebuilt Lucene index name (e.g. msmarco-v1-passage)")
    from pyserini.search.lucene import LuceneSearcher  # heavy (imports torch): only on this path

    try:
        searcher = LuceneSearcher.from_prebuilt_index(name)
    except (OSError, AssertionError) as e:  # Pyserini's download checks size and md5 with assert
        raise InputError(name, None, f"cannot download the prebuilt index: {e}") from None
    if searcher is None:  # what Pyserini returns when no download URL works, e.g. offline
        raise InputError(
            name,
            None,
            "Pyserini could not download this prebuilt index (no internet?); "
            "build an index from a corpus store instead: distillm index bm25 --corpus STORE --index DIR",
        )
    source, count = Path(searcher.index_dir), int(searcher.num_docs)
    searcher.close()
    index_dir = Path(index_dir)
    tmp = index_dir.with_name(index_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, copy_function=_link_or_copy)
    provenance = {
        "format": INDEX_FORMAT,
        "prebuilt": name,
        "description": TF_INDEX_INFO[name].get("description"),
        "source": str(source),
        "count": count,
        "versions": runtime_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    finish_index(tmp, index_dir, provenance)
    log.info("index %s: prebuilt %s, %d passages", index_dir, name, count)
    return provenance


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


# ---------------------------------------------------------------------------- retrieval


def open_searcher(index_dir: str | Path, k1: float = K1, b: float = B):
    """Anserini's SimpleSearcher (what Pyserini's LuceneSearcher wraps) with BM25(k1, b).

    A path that is not a Lucene index raises InputError, never a JVM stack trace.
    """
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise InputError(index_dir, None, "index directory not found")
    if not any(index_dir.glob("segments_*")):
        hint = " (it is a corpus store)" if (index_dir / "store.json").exists() else ""
        raise InputError(
            index_dir,
            None,
            f"not a Lucene index{hint}: no segments_N file; build one with `distillm index bm25 --corpus STORE --index DIR`",
        )
    start_jvm()
    from jnius import JavaException, autoclass

    try:
        searcher = autoclass("io.anserini.search.SimpleSearcher")(str(index_dir))
    except JavaException as e:
        raise InputError(index_dir, None, f"cannot open the Lucene index: {java_message(e)}") from None
    searcher.set_bm25(float(k1), float(b))
    return searcher


def retrieve(
    index_dir: str | Path,
    queries: dict[str, str],
    k: int = 100,
    k1: float = K1,
    b: float = B,
    threads: int | None = None,
    tag: str = "bm25",
    batch_size: int = 1000,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """BM25 top-k of every query: a run frame (RUN_COLUMNS, queries in input order) and stats.

    Stats: counts of queries, hits, queries with fewer than k hits and without hits (and
    which of those are empty after analysis), seconds, queries/s, settings, the index's
    provenance and the versions of Pyserini, Anserini, Lucene and Java.
    """
    check_k(k, batch_size)
    check_run_names(tag, queries)
    threads = threads or default_threads()
    hits = Hits(k)
    searcher = open_searcher(index_dir, k1, b)
    try:
        started = time.perf_counter()
        for qid, hit_ids, hit_scores in _search(searcher, queries, k, threads, batch_size, progress):
            hits.add(qid, hit_ids, hit_scores)
        seconds = time.perf_counter() - started
        no_hits = hits.empty
        empty_after_analysis = _empty_after_analysis(searcher, {q: queries[q] for q in no_hits})
    finally:
        searcher.close()
    if no_hits:
        log.warning(
            "%d of %d queries have no hits (%d are empty after analysis: only stop words or punctuation); "
            "they are not in the run: %s",
            len(no_hits),
            len(queries),
            len(empty_after_analysis),
            ", ".join(no_hits[:10]) + (" ..." if len(no_hits) > 10 else ""),
        )
    stats = {
        **hits.stats(
            len(queries),
            seconds,
            queries_without_hits=len(no_hits),
            qids_without_hits=no_hits,
            qids_empty_after_analysis=empty_after_analysis,
        ),
        "settings": {"k1": k1, "b": b, "threads": threads, "batch_size": batch_size, "tag": tag},
        "index": str(Path(index_dir).resolve()),
        "index_provenance": read_provenance(index_dir),
        "versions": runtime_versions(),
    }
    return hits.run(tag), stats


def _search(
    searcher, queries: dict[str, str], k: int, threads: int, batch_size: int, progress: bool
) -> Iterator[tuple[str, list[str], list[float]]]:
    """(qid, doc ids, scores) per query in input order, from batch_search over batches of queries."""
    from jnius import JavaException, autoclass
    from tqdm import tqdm

    jlist = autoclass("java.util.ArrayList")
    items = list(queries.items())
    with tqdm(total=len(items), desc="bm25", unit=" queries", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            texts, ids = jlist(), jlist()
            for qid, text in chunk:
                ids.add(qid)
                texts.add(text)
            try:
                results = searcher.batch_search(texts, ids, k, threads)
            except JavaException:
                _raise_unsearchable(searcher, chunk, k)
            for qid, _ in chunk:
                hits = results.get(qid)
                yield qid, [h.docid for h in hits], [float(h.score) for h in hits]
            bar.update(len(chunk))


def _raise_unsearchable(searcher, chunk: list[tuple[str, str]], k: int) -> NoReturn:
    """A batch failed in Java: search its queries one by one to name the culprit."""
    from jnius import JavaException

    for qid, text in chunk:
        try:
            searcher.search(text, k)
        except JavaException as e:
            raise ValueError(f"query {qid!r} cannot be searched: {java_message(e)}") from None
    raise RuntimeError("Anserini's batch_search failed, but every query searches alone")


def _empty_after_analysis(searcher, queries: dict[str, str]) -> list[str]:
    """The qids whose text leaves no terms after the index's analyzer."""
    if not queries:
        return []
    from jnius import autoclass

    analyze = autoclass("io.anserini.analysis.AnalyzerUtils").analyze
    analyzer = searcher.get_analyzer()
    return [qid for qid, text in queries.items() if analyze(analyzer, text).isEmpty()]
