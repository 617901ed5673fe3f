"""lightning-ir (0.0.6, its own environment, offline) reads our export with no conversion."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from pipeline.cli import main
from tests.dataset.conftest import export_argv
from tests.lightning_ir_env import lightning_ir

STEM = "__rankvicuna-bm25-43-sampled-100__"


def test_lightning_ir_reads_the_export_offline(dataset_dl19: Path, tmp_path: Path):
    metadata = json.loads((dataset_dl19 / "metadata.json").read_text())
    parquet, trec = metadata["lightning_ir_file"], metadata["teacher_run_file"]
    assert parquet == f"{STEM}rank-distillm-rankvicuna-bm25.parquet"  # with text: names itself, not a registered id
    assert trec == f"{STEM}msmarco-passage-trec-dl-2019-judged.run"
    assert pq.read_schema(dataset_dl19 / parquet).names == ["query_id", "query", "doc_id", "rank", "score", "text"]

    run_dataset, read_run = lightning_ir(
        [
            {"op": "run_dataset", "path": str(dataset_dl19 / parquet), "depth": 100},
            {"op": "read_run", "path": str(dataset_dl19 / trec)},
        ],
        tmp_path,
    )

    ours = pd.read_parquet(dataset_dl19 / "data", columns=["qid", "query", "doc_id", "teacher_rank", "text"])
    assert run_dataset["dataset"] == "rank-distillm-rankvicuna-bm25"
    samples = {s["query_id"]: s for s in run_dataset["samples"]}
    assert len(samples) == 43
    for qid, group in ours.groupby("qid", sort=False):
        sample = samples[qid]
        assert sample["doc_ids"] == group["doc_id"].tolist()  # the teacher's order
        assert sample["target_columns"] == 1  # `rank` alone: no first_stage_rank mixed in
        assert sample["targets"] == (100 - group["teacher_rank"] + 1).astype(float).tolist()  # depth - rank + 1
        assert sample["query"] == group["query"].iloc[0]
        assert sample["docs"] == group["text"].tolist()
    # the .run names the real ir_datasets id, which lightning-ir resolves (without downloading anything)
    assert read_run["dataset"] == read_run["dataset_id"] == "msmarco-passage/trec-dl-2019/judged"
    assert list(zip(read_run["query_ids"], read_run["doc_ids"], read_run["ranks"], strict=True)) == list(
        zip(ours["qid"], ours["doc_id"], ours["teacher_rank"], strict=True)
    )


def test_without_text_or_without_an_ir_datasets_id(teacher_dl19: dict[str, Path], tmp_path: Path, caplog):
    out = tmp_path / "no-text"
    assert main(export_argv(teacher_dl19, out)) == 0  # --dataset-id given, no passage text
    metadata = json.loads((out / "metadata.json").read_text())
    # without text lightning-ir must fetch the passages: the Parquet names the ir_datasets id
    assert metadata["lightning_ir_file"] == f"{STEM}msmarco-passage-trec-dl-2019-judged.parquet"
    assert pq.read_schema(out / metadata["lightning_ir_file"]).names == ["query_id", "query", "doc_id", "rank", "score"]

    caplog.set_level(logging.WARNING)
    argv = [a for a in export_argv(teacher_dl19, tmp_path / "no-id") if a != "msmarco-passage/trec-dl-2019/judged"]
    argv.remove("--dataset-id")
    assert main([*argv, "--teacher-name", "rank.vicuna"]) == 0
    assert "no ir_datasets id for the queries" in caplog.text
    metadata = json.loads((tmp_path / "no-id" / "metadata.json").read_text())
    assert metadata["teacher_run_file"] is None and not list((tmp_path / "no-id").glob("*.run"))
    # a dot would make lightning-ir read ".vicuna-..." as the format
    assert metadata["lightning_ir_file"] == "__rank-vicuna-bm25-43-sampled-100__rank-distillm-rank-vicuna-bm25.parquet"
    assert main(["validate", str(tmp_path / "no-id")]) == 0

    caplog.clear()
    assert main([*argv, "--dataset-id", "msmarco-passage/no-such-split", "--out", str(tmp_path / "unknown")]) == 0
    assert "not a registered ir_datasets id" in caplog.text
