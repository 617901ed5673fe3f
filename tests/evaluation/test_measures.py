import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.contract.qrels import read_qrels
from pipeline.contract.run import read_trec_run
from pipeline.evaluation.measures import evaluate


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


# ------------------------------------------------------------------ several runs, a baseline


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "evaluate", *args], capture_output=True, text=True, timeout=300
    )


def test_baseline_comparison_gives_the_p_values_of_an_independent_computation(trec_dl: Path, tmp_path: Path):
    """Real runs (BM25, RankVicuna, RankGPT on DL19): the JSON's t, p and Holm-adjusted p equal a
    hand computation (formula + incomplete beta function) on the per-query values it wrote."""
    import math

    from scipy.special import betainc

    reference = trec_dl.parent.parent / "reference" / "teacher_runs"
    bm25 = trec_dl / "run.bm25.dl19.top100.txt"
    out = _evaluate(
        f"bm25={bm25}",
        f"rankvicuna={reference / 'rankvicuna7b' / 'run_dl19.txt'}",
        f"rankgpt={reference / 'rankgpt_gpt35' / 'dl19_run1.txt'}",
        "--qrels",
        str(trec_dl / "qrels.dl19-passage.txt"),
        "--baseline",
        str(bm25),
        "--json",
        str(tmp_path / "c.json"),
        "--per-query",
        str(tmp_path / "pq.tsv"),
    )
    assert out.returncode == 0, out.stderr
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["baseline"] == "bm25" and record["correction"] == "holm"
    assert record["runs"]["rankvicuna"]["nDCG@10"] == pytest.approx(0.6682, abs=5e-5)  # rank_llm's figure
    per_query = pd.read_csv(tmp_path / "pq.tsv", sep="\t", dtype={"qid": str}).pivot(
        index="qid", columns="run", values="value"
    )
    assert len(per_query) == 43
    p_hand = {}
    for c in record["comparisons"]:
        d = (per_query[c["run"]] - per_query["bm25"]).to_list()
        n, mean = len(d), sum(d) / len(d)
        t = mean / (math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) / math.sqrt(n))
        p_hand[c["run"]] = float(betainc((n - 1) / 2, 0.5, (n - 1) / (n - 1 + t * t)))
        assert c["t"] == pytest.approx(t) and c["p"] == pytest.approx(p_hand[c["run"]])
        assert c["wins"] + c["ties"] + c["losses"] == c["queries"] == 43
        assert c["wins"] == sum(x > 1e-9 for x in d) and c["losses"] == sum(x < -1e-9 for x in d)
    low = min(p_hand.values())
    holm = {run: min(1.0, 2 * p) if p == low else max(min(1.0, 2 * low), p) for run, p in p_hand.items()}
    assert {c["run"]: c["p_adjusted"] for c in record["comparisons"]} == pytest.approx(holm)
    lines = out.stdout.splitlines()
    assert lines[1].split() == ["run", "queries", "nDCG@10", "delta", "t", "p", "p_adj", "W/T/L"]
    assert lines[2].startswith("bm25 (baseline)") and lines[3].startswith("rankvicuna") and lines[3].endswith("*")


def test_runs_over_other_queries_are_compared_over_the_shared_ones_and_said_so(trec_dl: Path, tmp_path: Path):
    bm25 = trec_dl / "run.bm25.dl19.top100.txt"
    lines = bm25.read_text().splitlines()
    first_ten = [line for line in lines if line.split()[0] in list(dict.fromkeys(x.split()[0] for x in lines))[:10]]
    partial = tmp_path / "partial.run"
    partial.write_text("\n".join(first_ten) + "\n")
    qrels = str(trec_dl / "qrels.dl19-passage.txt")
    out = _evaluate(
        str(partial), str(bm25), "--qrels", qrels, "--baseline", str(bm25), "--json", str(tmp_path / "c.json")
    )
    assert out.returncode == 0, out.stderr
    assert "partial: 33 of the 43 judged queries are not in the run; as trec_eval" in out.stderr
    assert "compared over the 10 queries both cover (33 covered by only one of them left out)" in out.stderr
    (c,) = json.loads((tmp_path / "c.json").read_text())["comparisons"]
    assert (c["queries"], c["t"], c["p"], c["wins"], c["ties"]) == (10, 0.0, 1.0, 0, 10)  # the same rankings
    # --all-judged: the 33 missing queries count 0 and the test is over all 43
    out = _evaluate(
        str(partial),
        str(bm25),
        "--qrels",
        qrels,
        "--baseline",
        str(bm25),
        "--all-judged",
        "--json",
        str(tmp_path / "c.json"),
    )
    (c,) = json.loads((tmp_path / "c.json").read_text())["comparisons"]
    # 32 losses: of the 33 queries, one has BM25 nDCG@10 0 (a tie at 0)
    assert (c["queries"], c["wins"], c["ties"], c["losses"]) == (43, 0, 11, 32) and c["p"] < 1e-6


def test_bad_comparisons_are_refused_with_a_clear_message(trec_dl: Path, tmp_path: Path):
    dl19, dl20 = trec_dl / "run.bm25.dl19.top100.txt", trec_dl / "run.bm25.dl20.top100.txt"
    qrels19 = str(trec_dl / "qrels.dl19-passage.txt")
    out = _evaluate(str(dl19), "--qrels", qrels19, "--baseline", str(dl20))  # baseline of another query set
    assert out.returncode == 2 and f"{dl20}: none of its 54 queries is judged in {qrels19}" in out.stderr
    one = tmp_path / "one.run"
    one.write_text("\n".join(dl19.read_text().splitlines()[:100]) + "\n")  # one query
    out = _evaluate(str(one), "--qrels", qrels19, "--baseline", str(dl19))
    assert out.returncode == 2 and "share 1 evaluated queries: a paired test needs at least 2" in out.stderr
    assert "Traceback" not in out.stderr
