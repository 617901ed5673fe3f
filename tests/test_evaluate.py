import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.evaluate import evaluate
from pipeline.io.trec import read_qrels, read_trec_run


@pytest.mark.parametrize(("year", "expected"), [("19", 0.5058), ("20", 0.4796)])
def test_bm25_runs_give_trec_eval_values(trec_dl: Path, year: str, expected: float):
    run = read_trec_run(trec_dl / f"run.bm25.dl{year}.top100.txt")
    qrels = read_qrels(trec_dl / f"qrels.dl{year}-passage.txt")
    values, per_query = evaluate(run, qrels, ["nDCG@10", "RR(rel=2)@10"])
    assert round(values["nDCG@10"], 4) == expected
    assert per_query["qid"].nunique() == run["qid"].nunique()
    assert per_query.groupby("measure")["value"].mean()["nDCG@10"] == pytest.approx(values["nDCG@10"])


def test_unknown_measure(trec_dl: Path):
    run = read_trec_run(trec_dl / "run.bm25.dl19.top100.txt")
    with pytest.raises(ValueError, match="unknown measure"):
        evaluate(run, read_qrels(trec_dl / "qrels.dl19-passage.txt"), ["nDCG@ten"])


def test_cli_writes_json_and_per_query(trec_dl: Path, tmp_path: Path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "evaluate",
            str(trec_dl / "run.bm25.dl20.top100.txt"),
            "--qrels",
            str(trec_dl / "qrels.dl20-passage.txt"),
            "-m",
            "nDCG@10",
            "-m",
            "R(rel=2)@100",
            "--json",
            str(tmp_path / "m.json"),
            "--per-query",
            str(tmp_path / "pq.tsv"),
            "--about",
            "BM25 top-100",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert out.stdout.splitlines()[0] == "nDCG@10\t0.4796"
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["nDCG@10"] == pytest.approx(0.4796, abs=5e-5) and metrics["queries"] == 54
    assert list(metrics) == ["nDCG@10", "R(rel=2)@100", "queries", "about"] and metrics["about"] == "BM25 top-100"
    assert len((tmp_path / "pq.tsv").read_text().splitlines()) == 1 + 2 * 54


def test_cli_error_names_file_and_line(tmp_path: Path, trec_dl: Path):
    bad = tmp_path / "bad.run"
    bad.write_text("1 Q0 d 1 1.0 t\n1 Q0 e 2\n")
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "evaluate", str(bad), "--qrels", str(trec_dl / "qrels.dl19-passage.txt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert f"{bad}:2: expected 6 fields" in out.stderr


def test_mean_is_over_judged_queries_in_the_run_like_trec_eval(trec_dl: Path):
    run = read_trec_run(trec_dl / "run.bm25.dl19.top100.txt")
    qrels = read_qrels(trec_dl / "qrels.dl19-passage.txt")
    first_four = run[run["qid"].isin(run["qid"].unique()[:4])]
    values, per_query = evaluate(first_four, qrels)
    _, full_per_query = evaluate(run, qrels)
    expected = full_per_query[full_per_query["qid"].isin(first_four["qid"])]["value"].mean()
    assert per_query["qid"].nunique() == 4 and values["nDCG@10"] == pytest.approx(expected)
    padded, _ = evaluate(first_four, qrels, all_judged=True)  # trec_eval -c: missing queries count 0
    assert padded["nDCG@10"] == pytest.approx(expected * 4 / 43)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_a_run_without_rankings_is_an_error_not_nan(tmp_path: Path, trec_dl: Path, capsys, content: str):
    empty = tmp_path / "empty.run"
    empty.write_text(content)
    assert main(["evaluate", str(empty), "--qrels", str(trec_dl / "qrels.dl19-passage.txt")]) == 2
    captured = capsys.readouterr()
    assert f"distillm evaluate: error: {empty}: the run holds no rankings (empty file)" in captured.err
    assert "nan" not in captured.out


def test_a_run_whose_queries_are_not_judged_is_an_error(tmp_path: Path, trec_dl: Path, capsys):
    run = tmp_path / "unjudged.run"
    run.write_text("no-such-query Q0 d1 1 2.0 t\nno-such-query Q0 d2 2 1.0 t\n")
    qrels = trec_dl / "qrels.dl19-passage.txt"
    assert main(["evaluate", str(run), "--qrels", str(qrels)]) == 2
    assert f"{run}: none of its 1 queries is judged in {qrels}: nothing to evaluate" in capsys.readouterr().err
