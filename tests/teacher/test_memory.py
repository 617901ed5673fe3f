"""The teacher's memory does not grow with the run: its driver holds the queries in flight, the
shard merge where things are in the shards' files. Each is measured (tracemalloc) on a small and
an 8x larger synthetic run over the real DL passages, replies scripted per window (replay)."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from pipeline.contract.corpus import CorpusStore
from pipeline.contract.queries import read_queries
from pipeline.contract.rerank_inputs import read_rerank_lists
from pipeline.teacher.driver import Teacher
from pipeline.teacher.job import run_to_files
from pipeline.teacher.prompts import load_prompt
from pipeline.teacher.render import PromptRenderer
from pipeline.teacher.reuse import ReplayBackend
from pipeline.teacher.scale_out import merge_runs
from pipeline.teacher.settings import TeacherSettings

SETTINGS = TeacherSettings(model="scripted", prompt="rank_vicuna", depth=20, window=4, stride=2)  # 9 windows
REPLY = "[4] > [2] > [3] > [1]"


def synthetic_run(dl_store: Path, path: Path, n_queries: int) -> tuple[Path, Path]:
    """n_queries x 20 candidates drawn from 300 DL passages (so ftfy's cache is warm after a few
    queries), the DL19 query texts cycled; and a log scripting every window's reply."""
    doc_ids = next(CorpusStore(dl_store / "corpus").iter_batches(300)).column("doc_id").to_pylist()
    texts = list(read_queries(dl_store / "queries.tsv").values())
    rng = np.random.default_rng(0)
    queries, log = path.with_suffix(".tsv"), path.with_suffix(".replies.jsonl")
    with open(path, "w") as run, open(queries, "w") as q, open(log, "w") as replies:
        for i in range(n_queries):
            q.write(f"s{i}\t{texts[i % len(texts)]}\n")
            docs = rng.choice(len(doc_ids), 20, replace=False)
            run.write("".join(f"s{i} Q0 {doc_ids[d]} {r} {20 - r}.0 bm25\n" for r, d in enumerate(docs, start=1)))
            for w in range(9):
                replies.write(json.dumps({"qid": f"s{i}", "window": w, "prompt_sha256": "-", "reply": REPLY}) + "\n")
    return queries, log


def teacher_peak(dl_store: Path, work: Path, n_queries: int) -> int:
    """Peak traced memory of one teacher run over a run on disk, writing the run as it goes."""
    work.mkdir()
    queries_path, replies = synthetic_run(dl_store, work / "bm25.run", n_queries)
    lists, queries, corpus = read_rerank_lists(work / "bm25.run", queries_path, dl_store / "corpus", work / "x.lists")
    backend = ReplayBackend(replies, by_window=True)  # built first: its index is per window by design
    teacher = Teacher(backend, PromptRenderer(None), SETTINGS, load_prompt(SETTINGS.prompt), corpus, max_active=8)
    out = work / "teacher.run"
    tracemalloc.start()
    log, stats = out.with_name("teacher.run.log.jsonl"), out.with_name("teacher.run.stats.json")
    run_to_files(teacher, lists, queries, out, log, stats, "t", {}, progress=False)  # as `distillm rerank`
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert teacher.tally.windows == 9 * n_queries
    assert len((work / "teacher.run").read_text().splitlines()) == 20 * n_queries
    return peak


@pytest.mark.timeout(300)
def test_the_driver_holds_the_queries_in_flight_not_the_run(dl_store: Path, tmp_path: Path):
    teacher_peak(dl_store, tmp_path / "warm", 40)  # fills ftfy's passage cache (up to 65,536 texts)
    small, large = teacher_peak(dl_store, tmp_path / "small", 50), teacher_peak(dl_store, tmp_path / "large", 400)
    # ~100 bytes a query here; the run's lists alone, read whole (as before), take ~8 KB a query
    assert large - small < 200 * (400 - 50), (small, large)


@pytest.mark.timeout(300)
def test_the_merge_holds_where_things_are_not_the_records(dl_store: Path, tmp_path: Path):
    def merge_peak(n_queries: int) -> int:
        work = tmp_path / str(n_queries)
        teacher_peak(dl_store, work, n_queries)  # one shard
        tracemalloc.start()
        merge_runs([f"s{i}" for i in range(n_queries)], work / "bm25.run", [work / "teacher.run"], work / "merged.run")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (work / "merged.run").read_bytes() == (work / "teacher.run").read_bytes()
        return peak

    small, large = merge_peak(50), merge_peak(400)
    # where each query's ranking and each window's record are: ~1 KB a query here; the rankings and
    # records themselves, as the merge held them before: ~29 KB a query
    assert large - small < 2000 * (400 - 50), (small, large)
