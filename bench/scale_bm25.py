"""BM25 (Pyserini/Anserini) at scale: index and retrieve at 250k, 500k and 1M passages, and the
extrapolation to MS MARCO's 8.8M from the fitted growth.

BM25's cost is set by posting-list lengths, so a corpus that repeats the 9,658 TREC DL texts
(as `bench/scale_corpus.py` does for the store) would be wrong here: every text 100 times,
every top-k a run of ties. Each synthetic passage is instead a bag of words drawn (seeded)
from the unigram distribution of the DL passages (~600k tokens), its length drawn from their
lengths: realistic term frequencies and document lengths, no topical structure (so query
terms co-occur less than in MS MARCO) and a vocabulary of ~40k terms where MS MARCO has
millions of (mostly rare) ones. The queries are real: MS MARCO's 6,980 dev-small queries.

Each size: `distillm ingest corpus` (not timed here), `distillm index bm25` and `distillm
retrieve bm25 --k 100` over the queries, each in its own process (peak RSS, which includes
the JVM's heap; the time of indexing proper and of the search loop, from the index's
provenance and the run's stats, without the JVM's start-up). Extrapolation: index time and
size linear in passages; retrieval time per query as a * N^b fitted over the sizes.

    .venv/bin/python bench/scale_bm25.py                                  # 100k and 250k passages, ~5 min
    .venv/bin/python bench/scale_bm25.py --sizes 250000,500000,1000000   # ~30 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_common import TREC_DL, WORK, disk_mib, dl_passages, measure_command, write_result

MSMARCO_PASSAGES = 8_841_823


def write_corpus(path: Path, n: int, seed: int) -> dict:
    """n passages `i<TAB>words`, each a bag of words from the DL passages' unigram distribution."""
    texts = dl_passages()
    tokens = Counter(word for text in texts for word in text.split())
    words = np.array(list(tokens))
    probability = np.array(list(tokens.values()), dtype=np.float64)
    probability /= probability.sum()
    lengths = np.array([len(t.split()) for t in texts])
    rng = np.random.default_rng(seed)
    total = 0
    with open(path, "w", encoding="utf-8") as f:
        for lo in range(0, n, 20_000):
            size = rng.choice(lengths, min(20_000, n - lo))
            drawn = words[rng.choice(len(words), int(size.sum()), p=probability)]
            cuts = np.cumsum(size)[:-1]
            f.write("".join(f"{lo + i}\t{' '.join(p)}\n" for i, p in enumerate(np.split(drawn, cuts))))
            total += int(size.sum())
    return {"vocabulary": len(words), "mean_words": round(total / n, 1), "pool_tokens": int(sum(tokens.values()))}


def dev_queries(path: Path) -> int:
    lines = (TREC_DL / "topics.msmarco-passage.dev-subset.txt").read_text(encoding="utf-8").splitlines()
    path.write_text("".join(f"{q}\t{' '.join(t.split())}\n" for q, t in (line.split("\t", 1) for line in lines)))
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,250000", help="corpus sizes (passages)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=WORK / "bm25")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    queries = work / "dev.tsv"
    n_queries = dev_queries(queries)
    quiet = {"TQDM_DISABLE": "1"}
    results: dict = {"queries": f"MS MARCO dev-small, {n_queries} queries", "k": 100, "sizes": {}}
    print(
        f"{'passages':>10} {'index s':>8} {'passages/s':>10} {'index MiB':>9} {'peak RSS MiB':>12} "
        f"{'retrieve s':>10} {'ms/query':>8} {'peak RSS MiB':>12}"
    )
    for n in sizes:
        tsv, store, index, run = (work / f"{name}-{n}" for name in ("corpus.tsv", "store", "index", "bm25.run"))
        shape = write_corpus(tsv, n, args.seed)
        measure_command(["ingest", "corpus", str(tsv), "--out", str(store)], quiet)
        tsv.unlink()
        built = measure_command(["index", "bm25", "--corpus", str(store), "--index", str(index)], quiet)
        shutil.rmtree(store)
        searched = measure_command(
            ["retrieve", "bm25", "--index", str(index), "--queries", str(queries), "--out", str(run)], quiet
        )
        # the commands' own timings, without the JVM's and imports' start-up: indexing proper
        # (the index's distillm.json) and the search loop (the run's stats)
        indexing = json.loads((index / "distillm.json").read_text())["seconds"]
        search = json.loads(run.with_name(run.name + ".stats.json").read_text())["seconds"]
        r = {
            "corpus": shape,
            "index": {
                **built,
                "indexing_seconds": indexing,
                "passages_per_second": round(n / indexing),
                "index_mib": disk_mib(index),
            },
            "retrieve": {**searched, "search_seconds": search, "ms_per_query": round(search / n_queries * 1000, 3)},
        }
        results["sizes"][n] = r
        print(
            f"{n:>10,} {indexing:>8.1f} {r['index']['passages_per_second']:>10,} {r['index']['index_mib']:>9.0f} "
            f"{built['peak_rss_mib']:>12.0f} {search:>10.1f} {r['retrieve']['ms_per_query']:>8.2f} "
            f"{searched['peak_rss_mib']:>12.0f}"
        )
        shutil.rmtree(index)
    # extrapolation to MS MARCO: time and size linear in passages; per-query time a * N^b
    ns = np.array(sizes, dtype=np.float64)
    index_s = np.array([results["sizes"][n]["index"]["indexing_seconds"] for n in sizes])
    index_mib = np.array([results["sizes"][n]["index"]["index_mib"] for n in sizes])
    per_query = np.array([results["sizes"][n]["retrieve"]["ms_per_query"] for n in sizes])
    seconds_per_passage = float(np.polyfit(ns, index_s, 1)[0]) if len(sizes) > 1 else index_s[0] / ns[0]
    b, log_a = np.polyfit(np.log(ns), np.log(per_query), 1) if len(sizes) > 1 else (1.0, np.log(per_query[0] / ns[0]))
    results["extrapolation_8.8M"] = {
        "basis": "index: least-squares line of seconds (and MiB) over passages; retrieval: ms/query = a * N^b "
        "fitted in log-log over the measured sizes",
        "index_seconds": round(seconds_per_passage * MSMARCO_PASSAGES),
        "index_mib": round(float(index_mib[-1] / ns[-1] * MSMARCO_PASSAGES)),
        "retrieval_exponent_b": round(float(b), 3),
        "ms_per_query": round(float(np.exp(log_a) * MSMARCO_PASSAGES**b), 1),
    }
    e = results["extrapolation_8.8M"]
    print(
        f"extrapolated to {MSMARCO_PASSAGES:,} passages: index ~{e['index_seconds'] / 60:.0f} min, "
        f"~{e['index_mib'] / 1024:.1f} GiB; retrieval ~{e['ms_per_query']} ms/query (N^{e['retrieval_exponent_b']})"
    )
    name = "scale_bm25" if sizes[-1] >= 1_000_000 else f"scale_bm25_{sizes[-1]}"
    print(f"-> {write_result(name, results)}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
