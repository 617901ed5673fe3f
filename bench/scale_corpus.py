"""The corpus store at MS MARCO size: `distillm ingest corpus`, then candidate lookups, cold and warm.

A synthetic corpus with MS MARCO's shape (default 1M passages; `--passages 8841823` is the
real count): ids 0..N-1 as in MS MARCO, each text drawn (seeded) from the 9,658 distinct
real passages of the TREC DL 2019/2020 BM25 top-100s, so the length distribution is a
real one (mean 64 words, 385 bytes). It is written as a TSV under `--work` (never in the
repository) and deleted afterwards unless `--keep`.

Measured, each in its own process: `distillm ingest corpus` (time, peak RSS, disk); then
`CorpusStore.passages` for the 100 candidates of each of `--queries` random queries (ids
uniform over the store, as a query's candidates are), first with the store evicted from
the page cache (cold: every query reads its rows from disk, the cache filling as it goes),
then again over the same queries (warm). Goal: under 5 ms per query warm at 8.8M passages.

    .venv/bin/python bench/scale_corpus.py                        # 1M passages, ~3 min
    .venv/bin/python bench/scale_corpus.py --passages 8841823     # MS MARCO size, ~25 min, 7 GB on disk
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_common import (
    WORK,
    disk_mib,
    dl_passages,
    evict_from_page_cache,
    measure_command,
    measure_python,
    write_result,
)

_LOOKUP = """
import numpy as np
from pipeline.contract.corpus import CorpusStore
store_dir, n_queries, depth, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
opened = time.perf_counter()
store = CorpusStore(store_dir)
open_ms = (time.perf_counter() - opened) * 1000
rng = np.random.default_rng(seed)
queries = [[str(i) for i in rng.choice(len(store), depth, replace=False)] for _ in range(n_queries)]
result = {"open_ms": open_ms}
for label in ("cold", "warm"):
    ms = []
    for ids in queries:
        start = time.perf_counter()
        passages = store.passages(ids)
        ms.append((time.perf_counter() - start) * 1000)
        assert [p.doc_id for p in passages] == ids
    ms = np.array(ms)
    result[label] = {
        "ms_per_query_median": float(np.median(ms)),
        "ms_per_query_mean": float(ms.mean()),
        "ms_per_query_p95": float(np.percentile(ms, 95)),
        "ms_per_query_p99": float(np.percentile(ms, 99)),
        "ms_first_100_queries_mean": float(ms[:100].mean()),
    }
print(json.dumps(result))
"""


def write_collection(path: Path, n: int, seed: int) -> dict[str, float]:
    """A TSV of n passages `i<TAB>text`, texts drawn from the DL pool (seeded); returns its shape."""
    texts = dl_passages()
    rng = np.random.default_rng(seed)
    words = np.array([len(t.split()) for t in texts])
    sizes = np.array([len(t.encode()) for t in texts])
    drawn_words = drawn_bytes = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for lo in range(0, n, 100_000):
            picks = rng.integers(0, len(texts), min(100_000, n - lo))
            drawn_words += int(words[picks].sum())
            drawn_bytes += int(sizes[picks].sum())
            f.write("".join(f"{lo + i}\t{texts[p]}\n" for i, p in enumerate(picks.tolist())))
    return {"mean_words": round(drawn_words / n, 1), "mean_text_bytes": round(drawn_bytes / n, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=1_000_000, help="corpus size (MS MARCO: 8841823)")
    parser.add_argument("--queries", type=int, default=10_000, help="queries whose candidates are looked up")
    parser.add_argument("--depth", type=int, default=100, help="candidates per query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=WORK / "corpus", help="where the TSV and the store go")
    parser.add_argument("--keep", action="store_true", help="keep the TSV and the store")
    args = parser.parse_args()

    tsv, store = args.work / "collection.tsv", args.work / "store"
    started = time.perf_counter()
    shape = write_collection(tsv, args.passages, args.seed)
    print(f"wrote {args.passages:,} passages ({disk_mib(tsv):,.0f} MiB TSV) in {time.perf_counter() - started:.0f} s")
    ingest = measure_command(["ingest", "corpus", str(tsv), "--out", str(store)], env={"TQDM_DISABLE": "1"})
    print(f"ingest corpus: {ingest['seconds']:.0f} s, peak RSS {ingest['peak_rss_mib']:.0f} MiB")
    evict_from_page_cache(store)
    lookup = measure_python(_LOOKUP, str(store), str(args.queries), str(args.depth), str(args.seed))
    results = {
        "passages": args.passages,
        "corpus": f"synthetic: ids 0..N-1, texts drawn (seed {args.seed}) from the 9,658 TREC DL 2019/2020 passages",
        "text_shape": shape,
        "tsv_mib": disk_mib(tsv),
        "ingest": {**ingest, "passages_per_second": round(args.passages / ingest["seconds"])},
        "store_mib": disk_mib(store),
        "store_files_mib": {p.name: disk_mib(p) for p in sorted(store.iterdir())},
        "lookup": {"queries": args.queries, "depth": args.depth, **lookup},
        "goal_warm_ms_per_query": 5,
    }
    print(f"{'step':26} {'result':>60}")
    print(
        f"{'ingest corpus':26} {ingest['seconds']:>10.1f} s {ingest['cpu_seconds']:>8.1f} CPU s "
        f"{ingest['peak_rss_mib']:>10.0f} MiB peak {results['ingest']['passages_per_second']:>10,} /s"
    )
    print(f"{'store on disk':26} {results['store_mib']:>10,.0f} MiB (TSV {results['tsv_mib']:,.0f} MiB)")
    print(f"{'open store':26} {lookup['open_ms']:>10.1f} ms")
    for label in ("cold", "warm"):
        r = lookup[label]
        print(
            f"{'lookup ' + str(args.depth) + ', ' + label:26} median {r['ms_per_query_median']:.2f} ms, mean "
            f"{r['ms_per_query_mean']:.2f}, p95 {r['ms_per_query_p95']:.2f}, p99 {r['ms_per_query_p99']:.2f}, "
            f"first 100 {r['ms_first_100_queries_mean']:.2f} ms"
        )
    print(f"lookup process peak RSS {lookup['peak_rss_mib']:.0f} MiB; goal: warm < 5 ms per query")
    name = "scale_corpus" if args.passages >= 8_000_000 else f"scale_corpus_{args.passages}"
    print(f"-> {write_result(name, results)}")
    if not args.keep:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
