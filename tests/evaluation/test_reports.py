"""`distillm report`: the plot data of `dvc plots` (nDCG per stage, teacher vs first stage)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import kendalltau

from pipeline.cli import main
from pipeline.contract.run import ranked_lists, read_trec_run, write_trec_run
from pipeline.evaluation.reports import agreement_table, kendall_tau, ndcg_table
from pipeline.infra.errors import InputError


def test_kendall_tau_matches_scipy():
    reference = [f"d{i}" for i in range(30)]
    assert kendall_tau(reference, reference) == 1.0 and kendall_tau(reference[::-1], reference) == -1.0
    shuffled = reference[10:] + reference[:10][::-1]
    expected = kendalltau([reference.index(d) for d in shuffled], range(30)).statistic
    assert kendall_tau(shuffled, reference) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same items"):
        kendall_tau(["a", "b"], ["a", "c"])


def reorder_top(run: pd.DataFrame, depth: int) -> pd.DataFrame:
    """A 'teacher' run: each query's first-stage top-depth, reversed."""
    rows = []
    for qid, docs in ranked_lists(run).items():
        for rank, doc in enumerate(docs[:depth][::-1], start=1):
            rows.append({"qid": qid, "doc_id": doc, "rank": rank, "score": float(-rank), "tag": "t", "line": -1})
    return pd.DataFrame(rows)


def test_agreement_of_a_reversing_teacher_on_dl19(trec_dl: Path, tmp_path: Path):
    first_stage = trec_dl / "run.bm25.dl19.top100.txt"
    teacher = tmp_path / "teacher.run"
    write_trec_run(reorder_top(read_trec_run(first_stage), 20), teacher)
    out = tmp_path / "plots" / "agreement.csv"
    assert main(["report", "agreement", "--pair", "dl19", str(teacher), str(first_stage), "--out", str(out)]) == 0
    table = pd.read_csv(out, dtype={"qid": str})
    assert len(table) == 43 and set(table["set"]) == {"dl19"} and (table["documents"] == 20).all()
    assert (table["kendall_tau"] == -1.0).all() and (table["top10_overlap"] == 0.0).all()
    assert table["query"].iloc[0] == f"dl19:{table['qid'].iloc[0]}"
    # the first stage against itself: tau 1, full overlap
    same = agreement_table([("dl19", first_stage, first_stage)])
    assert (same["kendall_tau"] == 1.0).all() and (same["top10_overlap"] == 1.0).all()


def test_a_teacher_document_the_first_stage_never_retrieved_is_an_error(trec_dl: Path, tmp_path: Path):
    first_stage = trec_dl / "run.bm25.dl19.top100.txt"
    teacher_run = reorder_top(read_trec_run(first_stage), 20)
    teacher_run.loc[0, "doc_id"] = "not-retrieved"
    write_trec_run(teacher_run, tmp_path / "teacher.run")
    with pytest.raises(InputError, match="the teacher ranked documents"):
        agreement_table([("dl19", tmp_path / "teacher.run", first_stage)])


def test_ndcg_table_from_evaluate_json(trec_dl: Path, tmp_path: Path):
    metrics = tmp_path / "metrics"
    run = trec_dl / "run.bm25.dl19.top100.txt"
    for name in ("dl19-bm25", "dl19-student"):
        argv = ["evaluate", str(run), "--qrels", str(trec_dl / "qrels.dl19-passage.txt"), "-m", "nDCG@10"]
        assert main([*argv, "--json", str(metrics / f"{name}.json"), "--about", f"the {name} run"]) == 0
    out = tmp_path / "ndcg.csv"
    assert main(["report", "ndcg", str(metrics), "--out", str(out)]) == 0  # a folder of metrics files
    table = pd.read_csv(out)
    assert list(table["stage"]) == ["bm25", "student"] and set(table["set"]) == {"dl19"}
    assert list(table["name"]) == ["dl19-bm25", "dl19-student"] and table["about"][1] == "the dl19-student run"
    assert table["nDCG@10"].round(4).tolist() == [0.5058, 0.5058] and (table["queries"] == 43).all()
    (metrics / "broken.json").write_text(json.dumps({"run": "x"}))
    with pytest.raises(InputError, match="no nDCG@10"):
        ndcg_table([metrics / "broken.json"])
