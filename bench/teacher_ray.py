"""Ray scale-out overhead: the teacher with the replay backend, one process vs Ray blocks.

RankVicuna's real DL19 replies (387 windows, 43 queries) are replayed so that only the
orchestration is timed: the single-process path, and `--engine ray` with 2 actors and
blocks of 5, 10 and 43 queries on a local Ray (2 CPUs; Ray is started once, outside the
timing). Reports seconds, windows/s and the overhead per block. The output of every Ray run
is checked to equal the single-process run.

With a real model the time per block is the engine's: a query costs windows x prompt tokens
(9 x ~2,200 on DL19 with RankZephyr's tokenizer), so N GPUs give ~N times one GPU's
queries/s as long as blocks >> actors and the per-block overhead measured here stays small
against a block's model time.

    .venv/bin/python bench/teacher_ray.py   # table + bench/results/teacher_ray_cpu.json
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.shared_data import data_root  # noqa: E402  (data/shared, else ../shared)

SHARED = Path(os.environ.get("DISTILLM_SHARED", data_root(REPO)))


def main() -> None:
    import ray

    from pipeline.cli import main as distillm
    from pipeline.ingestion import ingest_candidates
    from pipeline.teacher.recorded_replies import ingest_files

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    ingest_candidates([SHARED / "data" / "trec-dl" / "retrieve_results_dl19.json"], work)
    run = work / "runs" / "retrieve_results_dl19.run"
    log = work / "rankvicuna.jsonl"
    dump = SHARED / "reference" / "teacher_runs" / "rankvicuna7b" / "prompts_responses_dl19.json"
    counts = ingest_files(
        dump, run, work / "queries.tsv", work / "corpus", "rank_vicuna", "castorini/rank_vicuna_7b_v1", log
    )
    n_windows, n_queries = counts["records"], counts["queries_complete"]
    common = [
        "rerank",
        "--run",
        str(run),
        "--queries",
        str(work / "queries.tsv"),
        "--corpus",
        str(work / "corpus"),
        "--backend",
        f"replay:{log}",
        "--prompt",
        "rank_vicuna",
        "--no-progress",
    ]

    def timed(out: Path, *extra: str) -> float:
        start = time.perf_counter()
        assert distillm([*common, "--out", str(out), *extra]) == 0
        return time.perf_counter() - start

    single = [timed(work / f"single{i}.run") for i in range(3)]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = {"single process": {"blocks": 1, "seconds": statistics.median(single)}}
    for block_size in (5, 10, 43):
        times = []
        for repeat in range(3):
            out = work / f"ray-{block_size}-{repeat}.run"
            times.append(
                timed(
                    out,
                    "--engine",
                    "ray",
                    "--ray-actors",
                    "2",
                    "--ray-cpus-per-actor",
                    "0.5",
                    "--block-size",
                    str(block_size),
                )
            )
            assert out.read_text() == (work / "single0.run").read_text()
        blocks = -(-n_queries // block_size)
        rows[f"ray, 2 actors, blocks of {block_size}"] = {"blocks": blocks, "seconds": statistics.median(times)}
    ray.shutdown()
    base = rows["single process"]["seconds"]
    ray_rows = [r for name, r in rows.items() if name.startswith("ray")]
    # least squares: ray seconds = start-up + blocks x per-block cost (over the single process)
    n = len(ray_rows)
    mean_b = sum(r["blocks"] for r in ray_rows) / n
    mean_s = sum(r["seconds"] - base for r in ray_rows) / n
    slope = sum((r["blocks"] - mean_b) * (r["seconds"] - base - mean_s) for r in ray_rows) / sum(
        (r["blocks"] - mean_b) ** 2 for r in ray_rows
    )
    fit = {"startup_seconds": round(mean_s - slope * mean_b, 3), "per_block_seconds": round(slope, 4)}
    print(f"{'path':32} {'blocks':>6} {'seconds':>8} {'windows/s':>10}")
    for name, r in rows.items():
        r["windows_per_second"] = round(n_windows / r["seconds"], 1)
        print(f"{name:32} {r['blocks']:>6} {r['seconds']:>8.2f} {r['windows_per_second']:>10.1f}")
    print(
        f"fit over the single process: Ray start-up {fit['startup_seconds']:.2f} s + "
        f"{fit['per_block_seconds']:.3f} s per block"
    )
    result = {
        "benchmark": "teacher_ray",
        "backend": "replay (RankVicuna DL19 replies)",
        "windows": n_windows,
        "queries": n_queries,
        "results": rows,
        "overhead_fit": fit,
        "note": "Ray runs include actor start-up (each actor loads the corpus store and builds its backend).",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "teacher_ray_cpu.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
