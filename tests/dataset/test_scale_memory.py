"""Export and validate do not hold the runs or the rows: their memory is measured (tracemalloc
and Arrow's memory pool) on a synthetic teacher run of 700 and of 2,800 queries x 100 candidates (what the 10M-row
benchmark, bench/scale_export.py, measures at full size)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.cli import main


def synthetic(work: Path, n_queries: int) -> list[str]:
    """First-stage and teacher runs (a permutation of each query's 100), stats and queries."""
    rng = np.random.default_rng(0)
    work.mkdir()
    with open(work / "fs.run", "w") as fs, open(work / "t.run", "w") as teacher, open(work / "q.tsv", "w") as q:
        for i in range(n_queries):
            q.write(f"q{i}\tquery number {i}\n")
            docs = rng.choice(1_000_000, 100, replace=False)
            fs.write("".join(f"q{i} Q0 {d} {r} {200 - r}.5 bm25\n" for r, d in enumerate(docs.tolist(), start=1)))
            perm = docs[rng.permutation(100)].tolist()
            teacher.write("".join(f"q{i} Q0 {d} {r} {101 - r}.0 t\n" for r, d in enumerate(perm, start=1)))
    stats = {"queries": n_queries, "windows": 9 * n_queries, "repairs": {}, "provenance": {"model": "m", "depth": 100}}
    (work / "t.run.stats.json").write_text(json.dumps(stats))
    argv = ["export", "--first-stage", str(work / "fs.run"), "--teacher", str(work / "t.run")]
    argv += ["--teacher-stats", str(work / "t.run.stats.json"), "--queries", str(work / "q.tsv")]
    argv += ["--shard-rows", "20000"]  # Parquet files are read whole-ish (one at a time): keep them small here
    return [*argv, "--dataset-id", "msmarco-passage/train/judged", "--out", str(work / "ds")]


_POOLS: list[pa.MemoryPool] = []  # never freed: Arrow buffers allocated from one may outlive the call


def traced(argv: list[str]) -> int:
    """Peak memory of a command: Python's (tracemalloc, numpy included) plus Arrow's memory pool."""
    default = pa.default_memory_pool()
    arrow = pa.proxy_memory_pool(default)
    _POOLS.append(arrow)
    pa.set_memory_pool(arrow)
    tracemalloc.start()
    try:
        assert main(argv) == 0
        return tracemalloc.get_traced_memory()[1] + arrow.max_memory()
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(default)


@pytest.mark.timeout(600)
def test_export_and_validate_hold_a_query_and_a_chunk_not_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for chunk in (
        "contract.dataset",
        "dataset.exporter",
        "dataset.rows",
        "dataset.validation",
    ):  # 65,536 rows: smaller here
        monkeypatch.setattr(f"pipeline.{chunk}.CHUNK_ROWS", 4096)
    # both above 65,536 rows, the batch lightning-ir's writer reads (pipeline.dataset.lightning_ir)
    small, large = synthetic(tmp_path / "small", 700), synthetic(tmp_path / "large", 2800)
    traced(small), traced(["validate", small[-1]])  # imports and first-use caches, before measuring
    export = traced(small), traced(large)
    validate = traced(["validate", small[-1]]), traced(["validate", large[-1]])
    # per query: its id, size and first line (export), its id (validate): ~150-300 bytes; the rows
    # themselves, as both held them before: 50-90 KB a query (bench/results/dataset_export.json)
    assert export[1] - export[0] < 600 * 2100, export
    assert validate[1] - validate[0] < 600 * 2100, validate
