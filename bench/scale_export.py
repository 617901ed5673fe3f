"""Dataset export and validation at 100k queries x 100 = 10M rows (default 10k queries, 1M rows).

Synthesises (seeded, under `--work`) what a teacher run at that scale leaves: the first-stage
run (100 distinct random passages of the corpus store per query, scores decreasing), the
teacher run (a random permutation of each query's candidates, as `distillm rerank` writes it:
rank 1.., score 100 - rank + 1), its stats file and the queries (real texts, new ids). The
corpus store is `--corpus` (default: the 8.8M-passage store `bench/scale_corpus.py --keep`
leaves at /tmp/scale/corpus/store, if there; else a 200k-passage store built here).

Each command runs in its own process (time, CPU time, peak RSS, peak anonymous RSS):

    distillm export ... --out DS                   (no text)
    distillm validate DS
    distillm export ... --corpus STORE --with-text --out DS-TEXT
    distillm validate DS-TEXT

Goal at 10M rows: peak memory under 2 GB.

    .venv/bin/python bench/scale_export.py                      # 1M rows, ~3 min
    .venv/bin/python bench/scale_export.py --queries 100000     # 10M rows, ~25 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_common import WORK, disk_mib, measure_command, real_queries, write_result
from scale_teacher import build_store

DEPTH = 100


def synthesise(work: Path, n_queries: int, store: Path, seed: int) -> dict[str, Path]:
    from pipeline.contract.corpus import CorpusStore

    passages = len(CorpusStore(store))
    texts = real_queries()
    rng = np.random.default_rng(seed)
    paths = {"fs": work / "bm25.run", "teacher": work / "teacher.run", "queries": work / "queries.tsv"}
    scores = [f"{20 - 0.1 * r:.4f}" for r in range(DEPTH)]
    with open(paths["fs"], "w") as fs, open(paths["teacher"], "w") as teacher, open(paths["queries"], "w") as q:
        for i in range(n_queries):
            q.write(f"q{i}\t{texts[i % len(texts)]}\n")
            docs = rng.choice(passages, DEPTH, replace=False)
            fs.write("".join(f"q{i} Q0 {d} {r + 1} {scores[r]} bm25\n" for r, d in enumerate(docs.tolist())))
            perm = docs[rng.permutation(DEPTH)].tolist()
            teacher.write("".join(f"q{i} Q0 {d} {r} {float(DEPTH - r + 1)!r} teacher\n" for r, d in enumerate(perm, 1)))
    stats = {
        "queries": n_queries,
        "candidates": n_queries * DEPTH,
        "windows": n_queries * 9,
        "windows_repaired": 0,
        "repair_rate": 0.0,
        "repairs": {},
        "provenance": {"model": "synthetic", "prompt": "rank_zephyr", "prompt_sha256": "0" * 64, "depth": DEPTH},
    }
    paths["stats"] = work / "teacher.run.stats.json"
    paths["stats"].write_text(json.dumps(stats))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=10_000, help="queries (x 100 rows)")
    parser.add_argument("--corpus", type=Path, help="corpus store (default: see the docstring)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=WORK / "export")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    default_store = WORK / "corpus" / "store"
    store = args.corpus or (default_store if (default_store / "store.json").exists() else None)
    store = store or build_store(work, 200_000, args.seed)
    paths = synthesise(work, args.queries, store, args.seed)
    rows = args.queries * DEPTH
    export = ["export", "--first-stage", str(paths["fs"]), "--teacher", str(paths["teacher"])]
    export += ["--teacher-stats", str(paths["stats"]), "--queries", str(paths["queries"])]
    export += ["--dataset-id", "msmarco-passage/train/judged"]
    steps = {
        "export": [*export, "--out", str(work / "ds")],
        "validate": ["validate", str(work / "ds")],
        "export --with-text": [*export, "--corpus", str(store), "--with-text", "--out", str(work / "ds-text")],
        "validate (with text)": ["validate", str(work / "ds-text")],
    }
    results = {
        "rows": rows,
        "queries": args.queries,
        "corpus_store": str(store),
        "run_mib": {"first_stage": disk_mib(paths["fs"]), "teacher": disk_mib(paths["teacher"])},
        "steps": {},
    }
    print(f"{rows:,} rows ({args.queries:,} queries x {DEPTH}); corpus store {store}")
    print(f"{'command':22} {'seconds':>8} {'CPU s':>7} {'rows/s':>10} {'peak RSS MiB':>13} {'peak anon MiB':>13}")
    for name, argv in steps.items():
        r = measure_command(argv, {"TQDM_DISABLE": "1"})
        r["rows_per_second"] = round(rows / r["seconds"])
        results["steps"][name] = r
        print(
            f"{name:22} {r['seconds']:>8.1f} {r['cpu_seconds']:>7.1f} {r['rows_per_second']:>10,} "
            f"{r['peak_rss_mib']:>13.0f} {r['peak_anon_mib']:>13.0f}"
        )
    results["dataset_mib"] = {"no text": disk_mib(work / "ds"), "with text": disk_mib(work / "ds-text")}
    print(
        f"dataset on disk: {results['dataset_mib']['no text']:,.0f} MiB, with text {results['dataset_mib']['with text']:,.0f} MiB"
    )
    results["goal_peak_mib"] = 2048
    name = "scale_export" if args.queries >= 100_000 else f"scale_export_{args.queries}"
    print(f"-> {write_result(name, results)}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
