"""Benchmark the ColBERTv2 (PLAID) first stage on CPU on the TREC DL candidate passages.

    .venv/bin/python bench/colbert.py [--pool all|dl19] [--repeats 3] [--threads 2] [--out bench/results/colbert_cpu.json]

The encoder is the MiniLM ColBERT built offline (`build_minilm_colbert_checkpoint`: 6
layers, 384 dims, untrained 128-dim projection): ~5x cheaper than colbertv2.0's BERT-base,
so its passages/s are an upper bound for the real model on the same machine. In one process:
- extensions: colbert-ai's 4 CPU extensions compiled (cold) or loaded (warm), seconds;
- indexing: `build_index` (nbits 2) of the pool: `all` = the 9,658 DL19 + DL20 BM25
  candidates (default, as bench/bm25.py), `dl19` = the 4,297 DL19 candidates; passages/s;
- search: `retrieve` (k=100, default settings) of the 243 DL19 + DL20 topics, `repeats`
  times; queries/s of the search loop (query encoding + PLAID) and of the whole call
  (which also loads the model and the index);
- recall: share of the exhaustive MaxSim top-10 (`exhaustive_search`, uncompressed
  embeddings, every passage) found in PLAID's top-100, over the queries whose candidates
  make up the pool (97 or 43) and over all 243 topics (most DL20 topics have no candidates
  in the pool: their top-10s are flat lists of off-topic passages, much harder to keep);
- nDCG@10 of the PLAID run over the pool (for information: a weak encoder);
- the reference, colbert-ai used directly in the same process: `Searcher.search` per query
  on the same index with the same settings (time ratio, and whether the hits are the same),
  and with `--reference-index` a plain `Indexer.index` of the same passages (which encodes
  them twice; time ratio, and whether the index files are identical).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a script, this file's folder is sys.path[0], and this file would shadow colbert-ai's `colbert`.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

REPO = Path(__file__).resolve().parents[1]
TREC_DL = Path(os.environ.get("DISTILLM_SHARED_DATA", REPO.parent / "shared" / "data")) / "trec-dl"
TOPICS = {"dl19": "topics.dl19-passage.txt", "dl20": "topics.dl20.txt"}
K = 100


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
    parser.add_argument("--pool", choices=("all", "dl19"), default="all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the CI machines have 2 cores)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "colbert_cpu.json")
    parser.add_argument(
        "--reference-index", action="store_true", help="also index with plain colbert-ai (doubles the indexing time)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    torch.set_num_threads(args.threads)
    from pipeline.contract.corpus import CorpusStore, build_corpus_store
    from pipeline.contract.qrels import read_qrels
    from pipeline.contract.queries import read_queries
    from pipeline.contract.run import ranked_lists, read_trec_run
    from pipeline.evaluation.measures import evaluate
    from pipeline.first_stage import colbert
    from pipeline.first_stage import colbert_runtime as colbert_ai
    from pipeline.first_stage.colbert_checkpoint import build_minilm_colbert_checkpoint
    from pipeline.ingestion import ingest_candidates

    queries: dict[str, str] = {}
    for topics in TOPICS.values():
        queries.update(read_queries(TREC_DL / topics))
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="colbert-bench-") as tmp:
        tmp = Path(tmp)
        ingest_candidates([TREC_DL / "retrieve_results_dl19.json", TREC_DL / "retrieve_results_dl20.json"], tmp)
        corpus = tmp / "corpus"
        if args.pool == "dl19":
            lists = ranked_lists(read_trec_run(tmp / "runs" / "retrieve_results_dl19.run"))
            doc_ids = list(dict.fromkeys(d for docs in lists.values() for d in docs))
            passages = CorpusStore(corpus).passages(doc_ids)
            corpus = tmp / "dl19-corpus"
            build_corpus_store(enumerate(passages, start=1), corpus, source="DL19 candidates", progress=False)
        count = len(CorpusStore(corpus))
        checkpoint = build_minilm_colbert_checkpoint(tmp / "minilm-colbert")

        cold = not all((colbert_ai.extensions_dir() / name).is_dir() for name in colbert_ai.EXTENSIONS)
        started = time.perf_counter()
        colbert_ai.compile_extensions()
        extensions_s = time.perf_counter() - started

        index = tmp / "index"
        provenance = colbert.build_index(corpus, index, checkpoint, threads=args.threads, progress=False)
        index_s = provenance["seconds"]

        loop_seconds, call_seconds, runs = [], [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run, stats = colbert.retrieve(index, queries, k=K, threads=args.threads, progress=False)
            call_seconds.append(time.perf_counter() - started)
            loop_seconds.append(stats["seconds"])
            runs.append(run)
        deterministic = all(r.equals(runs[0]) for r in runs[1:])
        reference_s, same_hits = reference_search(index, checkpoint, queries, count, runs[0])
        reference_index = reference_indexing(corpus, checkpoint, index, tmp) if args.reference_index else None

        started = time.perf_counter()
        exhaustive = colbert.exhaustive_search(checkpoint, corpus, queries, k=10)
        exhaustive_s = time.perf_counter() - started
        plaid = ranked_lists(runs[0])
        years = ("dl19",) if args.pool == "dl19" else ("dl19", "dl20")
        in_pool = set()
        for year in years:
            in_pool |= set(read_queries(tmp / "queries" / f"retrieve_results_{year}.tsv"))

        def recall_over(qids) -> float:
            found = sum(len(set(exhaustive[q]) & set(plaid.get(q, [])[:K])) for q in qids)
            return found / sum(len(exhaustive[q]) for q in qids)

        recall, recall_all = recall_over(in_pool), recall_over(exhaustive)
        ndcg = {
            year: round(
                evaluate(runs[0], read_qrels(TREC_DL / f"qrels.{year}-passage.txt"), ["nDCG@10"])[0]["nDCG@10"], 4
            )
            for year in years
        }

    loop_s, call_s = statistics.median(loop_seconds), statistics.median(call_seconds)
    result = {
        "corpus": f"TREC DL BM25 top-100 candidate passages ({'DL19' if args.pool == 'dl19' else 'DL19 + DL20'})",
        "passages": count,
        "queries": len(queries),
        "k": K,
        "encoder": "MiniLM-L6 ColBERT built by build_minilm_colbert_checkpoint (untrained 384->128 projection)",
        "settings": {
            **{key: provenance["settings"][key] for key in ("nbits", "doc_maxlen", "kmeans_niters", "partitions")},
            "ncells": colbert.NCELLS,
            "centroid_score_threshold": colbert.CENTROID_SCORE_THRESHOLD,
            "ndocs": colbert.NDOCS,
        },
        "threads": args.threads,
        "repeats": args.repeats,
        "extensions": {"cold_compile": cold, "seconds": round(extensions_s, 1)},
        "indexing": {"seconds": round(index_s, 1), "passages_per_second": round(count / index_s, 1)},
        "search": {
            "loop_seconds_median": round(loop_s, 3),
            "queries_per_second": round(len(queries) / loop_s, 1),
            "call_seconds_median": round(call_s, 3),
            "queries_per_second_whole_call": round(len(queries) / call_s, 1),
            "deterministic_across_repeats": deterministic,
        },
        "recall": {
            "exhaustive_top10_in_plaid_top100": round(recall, 4),
            "queries": f"the {len(in_pool)} queries whose candidates make up the pool",
            "exhaustive_top10_in_plaid_top100_all_topics": round(recall_all, 4),
            "goal": 0.95,
            "exhaustive_seconds": round(exhaustive_s, 1),
        },
        "ndcg@10_over_pool": ndcg,
        "reference_colbert_ai": {
            "search_loop_seconds": round(reference_s, 3),
            "ratio_ours_to_reference_search": round(loop_s / reference_s, 3),
            "same_hits": same_hits,
            "indexing": reference_index,
        },
        "gpu": "not measured: no device this session",
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            **provenance["versions"],
        },
    }
    rows = [
        ("extensions", f"{extensions_s:.1f} s", "cold compile" if cold else "cached"),
        ("indexing (build_index)", f"{index_s:.1f} s", f"{count / index_s:,.1f} passages/s"),
        ("search loop (retrieve)", f"{loop_s:.2f} s", f"{len(queries) / loop_s:,.1f} queries/s"),
        ("retrieve, whole call", f"{call_s:.2f} s", f"{len(queries) / call_s:,.1f} queries/s"),
        ("exhaustive top-10 in PLAID top-100", "", f"{recall:.4f} (goal >= 0.95; {len(in_pool)} queries)"),
        ("  the same over all topics", "", f"{recall_all:.4f} ({len(queries)} queries)"),
        ("nDCG@10 over the pool", "", ", ".join(f"{y} {v:.4f}" for y, v in ndcg.items())),
        ("deterministic searches", "", str(deterministic)),
        ("colbert-ai Searcher.search loop", f"{reference_s:.2f} s", f"ratio ours/reference {loop_s / reference_s:.3f}"),
        ("  same hits as ours", "", str(same_hits)),
    ]
    if reference_index:
        rows.append(
            (
                "colbert-ai Indexer.index",
                f"{reference_index['seconds']:.1f} s",
                f"ratio ours/reference {index_s / reference_index['seconds']:.3f}, "
                f"identical index: {reference_index['identical_index']}",
            )
        )
    print(f"ColBERT/PLAID on {count:,} DL candidate passages, {len(queries)} queries, k={K}, {args.threads} threads")
    for name, seconds, rate in rows:
        print(f"  {name:<36} {seconds:>9}  {rate}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


def reference_search(
    index: Path, checkpoint: Path, queries: dict[str, str], count: int, ours: pd.DataFrame
) -> tuple[float, bool]:
    """colbert-ai's own `Searcher.search`, query by query, on our index with our settings:
    seconds of the loop, and whether every query gets the same passages as in our run."""
    from colbert import Searcher
    from colbert.data import Collection
    from colbert.infra import ColBERTConfig, Run, RunConfig

    from pipeline.contract.run import ranked_lists
    from pipeline.first_stage import colbert

    config = ColBERTConfig(
        ncells=colbert.NCELLS, centroid_score_threshold=colbert.CENTROID_SCORE_THRESHOLD, ndocs=colbert.NDOCS
    )
    with Run().context(RunConfig(nranks=1, avoid_fork_if_possible=True)):
        searcher = Searcher(
            index=index.name,
            index_root=str(index.parent),
            checkpoint=str(checkpoint),
            collection=Collection(path=str(index / colbert.DOC_IDS), data=[""] * count),
            config=config,
            verbose=0,
        )
    started = time.perf_counter()
    hits = {qid: searcher.search(text, k=K) for qid, text in queries.items()}
    seconds = time.perf_counter() - started
    doc_ids = np.load(index / colbert.DOC_IDS)
    ours_lists = ranked_lists(ours)
    same = all(
        sorted(bytes(doc_ids[pid]).decode() for pid in pids) == sorted(ours_lists.get(qid, []))
        for qid, (pids, _, _) in hits.items()
    )
    return seconds, same


def reference_indexing(corpus: Path, checkpoint: Path, ours: Path, tmp: Path) -> dict:
    """A plain colbert-ai `Indexer.index` of the same passages (a Python list), same settings."""
    import torch
    from colbert import Indexer
    from colbert.infra import ColBERTConfig, Run, RunConfig

    from pipeline.contract.corpus import CorpusStore
    from pipeline.first_stage import colbert, colbert_runtime

    texts = list(colbert_runtime.StorePassages(CorpusStore(corpus)))
    config = ColBERTConfig(nbits=colbert.NBITS, doc_maxlen=colbert.DOC_MAXLEN, kmeans_niters=colbert.KMEANS_NITERS)
    started = time.perf_counter()
    with Run().context(RunConfig(nranks=1, avoid_fork_if_possible=True, index_root=str(tmp), root=str(tmp))):
        Indexer(checkpoint=str(checkpoint), config=config, verbose=0).index(name="reference", collection=texts)
    seconds = time.perf_counter() - started
    identical = True
    for name in ("centroids.pt", "buckets.pt", "avg_residual.pt", "0.codes.pt", "0.residuals.pt", "ivf.pid.pt"):
        a, b = torch.load(ours / name), torch.load(tmp / "reference" / name)
        a, b = (x if isinstance(x, tuple | list) else [x] for x in (a, b))
        identical &= len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    return {
        "seconds": round(seconds, 1),
        "passages_per_second": round(len(texts) / seconds, 1),
        "identical_index": identical,
    }


if __name__ == "__main__":
    main()
