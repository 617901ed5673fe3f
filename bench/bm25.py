"""Benchmark the BM25 first stage against raw Pyserini on the TREC DL candidate corpus.

    .venv/bin/python bench/bm25.py [--repeats 7] [--out bench/results/bm25_cpu.json]

Builds the corpus store of the 9,658 DL19 + DL20 candidate passages in a temporary
directory, then in this one process (one JVM):
- indexing: `build_index` (JsonCollection shards + Anserini's indexer), passages/s;
- retrieval: `retrieve` (what `distillm retrieve bm25` runs: batch_search in batches,
  hits into a run frame, stats) against Pyserini's `LuceneSearcher.batch_search` on the
  same index and queries (all DL19 + DL20 topics, 243 queries, k=100, k1=0.9, b=0.4),
  alternating; each after one warm-up run (JVM start, JIT); the median of the repeats counts.
`retrieve` is timed whole (it opens the index each call); Pyserini's searcher is opened once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.contract.queries import read_queries
from pipeline.first_stage import bm25
from pipeline.first_stage.java import runtime_versions, start_jvm
from pipeline.ingestion import ingest_candidates
from pipeline.shared_data import data_root

REPO = Path(__file__).resolve().parents[1]

TREC_DL = Path(os.environ.get("DISTILLM_SHARED_DATA", data_root(REPO) / "data")) / "trec-dl"
TOPICS = ("topics.dl19-passage.txt", "topics.dl20.txt")
K = 100


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bm25_cpu.json")
    args = parser.parse_args()
    threads = bm25.default_threads()
    queries: dict[str, str] = {}
    for topics in TOPICS:
        queries.update(read_queries(TREC_DL / topics))

    with tempfile.TemporaryDirectory(prefix="bm25-bench-") as tmp:
        tmp = Path(tmp)
        ingest_candidates([TREC_DL / "retrieve_results_dl19.json", TREC_DL / "retrieve_results_dl20.json"], tmp)
        index = tmp / "index"
        bm25.build_index(tmp / "corpus", index, threads, progress=False)  # warm-up: JVM start, JIT
        index_seconds = [
            timed(lambda: bm25.build_index(tmp / "corpus", index, threads, progress=False)) for _ in range(args.repeats)
        ]
        count = bm25.read_provenance(index)["count"]

        start_jvm()
        from pyserini.search.lucene import LuceneSearcher

        searcher = LuceneSearcher(str(index))
        searcher.set_bm25(bm25.K1, bm25.B)
        texts, qids = list(queries.values()), list(queries)

        def raw() -> None:
            searcher.batch_search(texts, qids, k=K, threads=threads)

        def ours() -> None:
            bm25.retrieve(index, queries, k=K, threads=threads, progress=False)

        raw(), ours()  # warm-up: JIT, page cache
        raw_seconds, our_seconds = [], []
        for _ in range(args.repeats):
            raw_seconds.append(timed(raw))
            our_seconds.append(timed(ours))
        searcher.close()

    index_s, raw_s, our_s = map(statistics.median, (index_seconds, raw_seconds, our_seconds))
    result = {
        "corpus": "TREC DL 2019 + 2020 BM25 top-100 candidate passages",
        "passages": count,
        "queries": len(queries),
        "k": K,
        "threads": threads,
        "repeats": args.repeats,
        "indexing": {"seconds_median": round(index_s, 3), "passages_per_second": round(count / index_s, 1)},
        "pyserini_batch_search": {
            "seconds_median": round(raw_s, 4),
            "queries_per_second": round(len(queries) / raw_s, 1),
        },
        "distillm_retrieve": {"seconds_median": round(our_s, 4), "queries_per_second": round(len(queries) / our_s, 1)},
        "throughput_ratio": round(raw_s / our_s, 3),
        "goal_ratio": 0.9,
        "seconds_all": {
            "indexing": [round(s, 3) for s in index_seconds],
            "pyserini_batch_search": [round(s, 4) for s in raw_seconds],
            "distillm_retrieve": [round(s, 4) for s in our_seconds],
        },
        "machine": {
            "nproc": os.cpu_count(),
            "usable_cores": threads,
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            **runtime_versions(),
        },
    }
    rows = [
        ("indexing (build_index)", f"{index_s:.2f} s", f"{count / index_s:,.0f} passages/s"),
        ("Pyserini batch_search", f"{raw_s:.3f} s", f"{len(queries) / raw_s:,.1f} queries/s"),
        ("distillm retrieve bm25", f"{our_s:.3f} s", f"{len(queries) / our_s:,.1f} queries/s"),
        ("throughput ratio", "", f"{raw_s / our_s:.3f} (goal >= 0.9)"),
    ]
    print(
        f"BM25 on {count:,} DL candidate passages, {len(queries)} queries, k={K}, {threads} threads (median of {args.repeats})"
    )
    for name, seconds, rate in rows:
        print(f"  {name:<24} {seconds:>9}  {rate}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
