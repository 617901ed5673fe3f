"""Dataset export at MS MARCO-train scale: 10k queries x 100 candidates = 1M rows.

Synthesises (fixed seed) a first-stage run (10k queries x 100 docs from a pool of 200k
passages), a teacher run that is a random permutation of each query's candidates, the
teacher stats, the queries and a 200k-passage corpus store, then times, each in a fresh
process so that peak RSS is the command's own:

    distillm export ...                 (no text)
    distillm validate DIR
    distillm export ... --with-text     (passage text from the memory-mapped store)

and, in this process, export's phases one by one, to show where the time goes (the
project's TREC run reader is per-line Python). Goal: export of 1M rows < 30 s.

    .venv/bin/python bench/dataset_export.py   # table + bench/results/dataset_export.json
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.contract.corpus import Passage, build_corpus_store  # noqa: E402
from pipeline.contract.dataset import write_shards  # noqa: E402
from pipeline.contract.queries import load_queries  # noqa: E402
from pipeline.contract.run import read_trec_run, write_trec_run  # noqa: E402
from pipeline.dataset.rows import teacher_rows  # noqa: E402

N_QUERIES, DEPTH, POOL, SEED = 10_000, 100, 200_000, 0
# Runs a pipeline command; reports its wall time and peak RSS. VmHWM, not ru_maxrss: after
# fork + exec, Linux's ru_maxrss keeps the parent's peak, VmHWM is the new process's own.
_MEASURE = (
    "import json, re, resource, sys, time\n"
    "from pipeline.cli import main\n"
    "start = time.perf_counter(); rc = main(sys.argv[1:]); seconds = time.perf_counter() - start\n"
    "peak = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1]) / 1024\n"
    "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "cpu, maxrss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024\n"
    "print(json.dumps({'rc': rc, 'seconds': seconds, 'cpu_seconds': cpu, 'peak_rss_mib': peak, 'ru_maxrss_mib': maxrss}), file=sys.stderr)\n"
)


def synthesise(work: Path) -> dict[str, Path]:
    rng = np.random.default_rng(SEED)
    paths = {k: work / v for k, v in (("fs", "bm25.run"), ("teacher", "teacher.run"), ("queries", "queries.tsv"))}
    with open(paths["fs"], "w") as fs, open(paths["teacher"], "w") as teacher, open(paths["queries"], "w") as q:
        for qid in range(N_QUERIES):
            docs = rng.choice(POOL, DEPTH, replace=False)
            scores = np.sort(rng.random(DEPTH) * 20)[::-1].tolist()
            fs.write(
                "".join(f"{qid} Q0 d{d} {r} {s!r} bm25\n" for r, (d, s) in enumerate(zip(docs, scores, strict=True), 1))
            )
            perm = docs[rng.permutation(DEPTH)]
            teacher.write("".join(f"{qid} Q0 d{d} {r} {DEPTH - r + 1}.0 synthetic\n" for r, d in enumerate(perm, 1)))
            q.write(f"{qid}\tsynthetic query number {qid}\n")
    stats = {
        "queries": N_QUERIES,
        "candidates": N_QUERIES * DEPTH,
        "windows": N_QUERIES * 9,
        "windows_repaired": 0,
        "repair_rate": 0.0,
        "repairs": {},
        "provenance": {"model": "synthetic", "prompt": "rank_zephyr", "prompt_sha256": "0" * 64, "depth": DEPTH},
    }
    paths["stats"] = work / "teacher.run.stats.json"
    paths["stats"].write_text(json.dumps(stats))
    words = np.array(
        ["the", "a", "passage", "of", "synthetic", "text", "about", "retrieval", "ranking", "distillation", "models"]
    )
    picks = words[rng.integers(0, len(words), size=(POOL, 50))]
    passages = ((i, Passage(f"d{i}", " ".join(picks[i]))) for i in range(POOL))
    build_corpus_store(passages, work / "corpus", source="synthetic", progress=False)
    paths["corpus"] = work / "corpus"
    return paths


def export_phases(paths: dict[str, Path], out: Path) -> dict[str, float]:
    """Seconds of each step of export (no text), run one after another in this process."""
    seconds, start = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal start
        seconds[name] = time.perf_counter() - start
        start = time.perf_counter()

    teacher, first_stage = read_trec_run(paths["teacher"]), read_trec_run(paths["fs"])
    lap("read_trec_run x2")
    rows = teacher_rows(teacher, paths["teacher"], first_stage, paths["fs"], DEPTH)
    lap("join")
    rows["query"] = rows["qid"].map(load_queries(paths["queries"]))
    rows["teacher_score"] = (DEPTH - rows["teacher_rank"] + 1).astype(np.float32)
    lap("queries")
    (out / "data").mkdir(parents=True)
    write_shards(
        rows, {"first_stage": "bm25", "teacher": "t", "shards": [{"file": "data/x.parquet", "rows": len(rows)}]}, out
    )
    lap("parquet")
    run = {"qid": rows["qid"].astype(object), "doc_id": rows["doc_id"].astype(object), "rank": rows["teacher_rank"]}
    run = pd.DataFrame({**run, "score": rows["teacher_score"].astype(float), "tag": pd.Series("t", rows.index, object)})
    write_trec_run(run, out / "teacher.run")
    lap("write_trec_run")
    return seconds


def measure(argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEASURE, *argv], cwd=REPO, capture_output=True, text=True)
    result = json.loads(done.stderr.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}")
    return result


def main() -> None:
    load = round(os.getloadavg()[0], 2)
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    started = time.perf_counter()
    paths = synthesise(work)
    print(f"synthesised {N_QUERIES} x {DEPTH} runs + {POOL} passages in {time.perf_counter() - started:.1f} s")
    export = ["export", "--first-stage", str(paths["fs"]), "--teacher", str(paths["teacher"])]
    export += ["--teacher-stats", str(paths["stats"]), "--queries", str(paths["queries"])]
    export += ["--dataset-id", "msmarco-passage/train/judged"]
    rows = N_QUERIES * DEPTH
    runs = {
        "export": measure([*export, "--out", str(work / "ds")]),
        "validate": measure(["validate", str(work / "ds")]),
        "export --with-text": measure(
            [*export, "--corpus", str(paths["corpus"]), "--with-text", "--out", str(work / "ds-text")]
        ),
    }
    phases = export_phases(paths, work / "phases")  # after the commands: it grows this process
    sizes = {
        name: sum(p.stat().st_size for p in (work / d / "data").glob("*.parquet"))
        for name, d in (("export", "ds"), ("export --with-text", "ds-text"))
    }
    print(f"{'command':22} {'seconds':>8} {'CPU s':>7} {'rows/s':>10} {'peak RSS MiB':>13} {'Parquet MiB':>12}")
    results = {}
    for name, r in runs.items():
        size = sizes.get(name)
        results[name] = {
            "seconds": round(r["seconds"], 2),
            "cpu_seconds": round(r["cpu_seconds"], 2),  # robust to other jobs on a shared machine
            "rows_per_second": round(rows / r["seconds"]),
            "peak_rss_mib": round(r["peak_rss_mib"]),
            "ru_maxrss_mib": round(r["ru_maxrss_mib"]),
            "parquet_mib": None if size is None else round(size / 2**20, 1),
        }
        shown = "" if size is None else f"{size / 2**20:>12.1f}"
        print(
            f"{name:22} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.2f} {rows / r['seconds']:>10,.0f} "
            f"{r['peak_rss_mib']:>13.0f} {shown}"
        )
    print("export's phases, in process: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
    print("goal: export of 1M rows < 30 s")
    out = {
        "benchmark": "dataset_export",
        "data": f"synthetic: {N_QUERIES} queries x {DEPTH} candidates (seed {SEED}), {POOL} passages of 50 words",
        "rows": rows,
        "results": results,
        "export_phases_seconds": {k: round(v, 2) for k, v in phases.items()},
        "goal_export_seconds": 30,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min_at_start": load,  # other jobs share this machine: compare cpu_seconds
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "dataset_export.json").write_text(json.dumps(out, indent=2) + "\n")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
