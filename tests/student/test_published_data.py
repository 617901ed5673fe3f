"""Stage 2 on the published Rank-DistiLLM layouts: TREC runs (the Zenodo records), the Hugging Face
parquet copies (qid, docno, score) and lightning-ir run tables, read as our own dataset is."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.infra.errors import InputError

NAME = "__stand-in-bm25-6-sampled-100__msmarco-passage-trec-dl-2019-judged"  # Rank-DistiLLM's naming


@pytest.fixture(scope="module")
def teacher_frame(teacher_dataset: Path) -> pd.DataFrame:
    return pd.read_parquet(teacher_dataset / "data", columns=["qid", "query", "doc_id", "teacher_rank"])


@pytest.fixture(scope="module")
def published(teacher_frame: pd.DataFrame, tmp_path_factory) -> dict[str, Path]:
    """The stand-in teacher's rankings in each published layout, rows shuffled (order must come from rank/score)."""
    out = tmp_path_factory.mktemp("published")
    rows = teacher_frame.sample(frac=1.0, random_state=0)
    score = 1.0 / rows["teacher_rank"]  # any score that decreases with the rank
    trec = out / f"{NAME}.run.gz"
    with gzip.open(trec, "wt") as f:
        for qid, doc, rank, s in zip(rows["qid"], rows["doc_id"], rows["teacher_rank"], score, strict=True):
            f.write(f"{qid} Q0 {doc} {rank} {s:.6f} stand-in\n")
    hf = out / f"{NAME}.parquet"
    pd.DataFrame({"qid": rows["qid"], "docno": rows["doc_id"], "score": score}).to_parquet(hf, index=False)
    lir = out / "__stand-in-bm25-6-sampled-100__stand-in.jsonl"
    table = rows.rename(columns={"qid": "query_id", "teacher_rank": "rank"}).assign(score=101 - rows["teacher_rank"])
    table.to_json(lir, orient="records", lines=True)
    return {"trec": trec, "huggingface": hf, "lightning-ir": lir}


@pytest.mark.parametrize("layout", ["trec", "huggingface", "lightning-ir"])
def test_each_layout_gives_the_lists_of_our_dataset(layout, published, teacher_dataset: Path, dl19_files):
    from pipeline.contract.corpus import CorpusStore
    from pipeline.student.training_lists import TeacherLists, epoch_rng

    corpus = CorpusStore(dl19_files["corpus"])
    ours = TeacherLists(teacher_dataset, list_size=8, corpus=corpus)
    theirs = TeacherLists(published[layout], list_size=8, corpus=corpus, queries=dl19_files["queries"])
    assert sorted(theirs.qids) == sorted(ours.qids) and theirs.counts["rows"] == ours.counts["rows"]
    position = {q: i for i, q in enumerate(theirs.qids)}
    for index, qid in enumerate(ours.qids):
        a = ours.sample(index, epoch_rng(0, 0, index))
        b = theirs.sample(position[qid], epoch_rng(0, 0, index))
        assert (b.query, b.doc_ids, b.targets) == (a.query, a.doc_ids, a.targets)


def test_train_on_a_published_trec_run(published, minilm: Path, dl19_files, tmp_path: Path):
    argv = ["train", "--stage", "distill", "--data", str(published["trec"]), "--queries", str(dl19_files["queries"])]
    argv += ["--corpus", str(dl19_files["corpus"]), "--list-size", "4", "--batch-size", "2", "--steps", "2"]
    argv += ["--query-length", "16", "--passage-length", "32", "--model", str(minilm), "--out", str(tmp_path / "out")]
    assert main([*argv, "--no-progress"]) == 0
    final = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert len(final) == 2 and np.isfinite(final["loss"]).all()
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()


def test_what_a_published_file_lacks_is_named(published, tmp_path: Path, dl19_files):
    from pipeline.student.training_lists import TeacherLists

    with pytest.raises(InputError, match=r"has no query text \(no `query` column\): pass --queries"):
        TeacherLists(published["trec"])
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"qid": ["1"], "docno": ["2"]}).to_parquet(bad)
    with pytest.raises(
        InputError, match=rf"{bad}: teacher rankings lack column\(s\) \['teacher_rank, rank or score'\]"
    ):
        TeacherLists(bad, queries=dl19_files["queries"])
    unknown = tmp_path / "unknown.run"
    unknown.write_text("no-such-query Q0 7067032 1 1.0 x\n")
    with pytest.raises(InputError, match=rf"{unknown}:1: query 'no-such-query' is not in the queries"):
        TeacherLists(unknown, queries=dl19_files["queries"])
