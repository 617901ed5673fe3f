"""The study's aggregation and tests on real runs, checked against independent computations.

Real teacher runs stand in for the students of a grid (RankGPT's five runs as the "seeds" of a
configuration, BM25's run as its control): the report must give their nDCG@10 means, spread
and the paired tests of seed-averaged per-query values that a hand computation gives.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from scipy.special import betainc

from pipeline.contract.qrels import load_qrels
from pipeline.contract.run import read_trec_run
from pipeline.evaluation.measures import evaluate
from pipeline.infra.errors import InputError
from pipeline.study.spec import collect_runs, load_spec, prepare

REPO = Path(__file__).resolve().parents[1]


def _t_p(d: list[float]) -> tuple[float, float]:
    n, mean = len(d), sum(d) / len(d)
    t = mean / (math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) / math.sqrt(n))
    return t, float(betainc((n - 1) / 2, 0.5, (n - 1) / (n - 1 + t * t)))


@pytest.fixture(scope="module")
def grid(trec_dl: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A spec and a runs folder: rankgpt-ranknet = RankGPT runs 3, 4, 5 as seeds 0, 1, 2; bm25-ranknet = BM25."""
    root = tmp_path_factory.mktemp("study")
    reference = trec_dl.parent.parent / "reference" / "teacher_runs" / "rankgpt_gpt35"
    spec = {
        "seeds": [0, 1, 2],
        "folds": {
            year: {
                "train": other,
                "first_stage": str(trec_dl / f"run.bm25.{year}.top100.txt"),
                "qrels": str(trec_dl / f"qrels.{year}-passage.txt"),
            }
            for year, other in (("dl19", "dl20"), ("dl20", "dl19"))
        },
        "teachers": {
            "rankgpt": {
                "about": "RankGPT",
                "runs": {y: str(reference / f"{y}_run1.txt") for y in ("dl19", "dl20")},
                "draws": {y: [str(reference / f"{y}_run{i}.txt") for i in (3, 4)] for y in ("dl19", "dl20")},
            },
            "bm25": {
                "about": "control",
                "runs": {y: str(trec_dl / f"run.bm25.{y}.top100.txt") for y in ("dl19", "dl20")},
            },
        },
        "control": "bm25",
        "loss": "ranknet",
    }
    (root / "params.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for year in ("dl19", "dl20"):
        for seed in (0, 1, 2):
            (root / "runs" / "rankgpt-ranknet").mkdir(parents=True, exist_ok=True)
            (root / "runs" / "bm25-ranknet").mkdir(parents=True, exist_ok=True)
            shutil.copy(
                reference / f"{year}_run{seed + 3}.txt", root / "runs" / "rankgpt-ranknet" / f"{year}-{seed}.run"
            )
            shutil.copy(trec_dl / f"run.bm25.{year}.top100.txt", root / "runs" / "bm25-ranknet" / f"{year}-{seed}.run")
    return root / "params.yaml", root / "runs"


def test_report_matches_independent_computation(grid: tuple[Path, Path], trec_dl: Path, tmp_path: Path):
    spec, runs = grid
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "study",
            "report",
            "--spec",
            str(spec),
            "--runs",
            str(runs),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["queries"] == 97 and summary["folds"] == {
        "dl19": {"train": "dl20", "queries": 43},
        "dl20": {"train": "dl19", "queries": 54},
    }
    reference = trec_dl.parent.parent / "reference" / "teacher_runs" / "rankgpt_gpt35"
    per_query = {}  # (year, run number) -> per-query nDCG@10
    for year in ("dl19", "dl20"):
        qrels = load_qrels(trec_dl / f"qrels.{year}-passage.txt")
        for i in (1, 3, 4, 5):
            per_query[year, i] = evaluate(read_trec_run(reference / f"{year}_run{i}.txt"), qrels)[1].set_index("qid")[
                "value"
            ]
        per_query[year, "bm25"] = evaluate(read_trec_run(trec_dl / f"run.bm25.{year}.top100.txt"), qrels)[1].set_index(
            "qid"
        )["value"]
    row = summary["configurations"]["rankgpt-ranknet"]
    # each seed's pooled mean (97 queries), their mean and sd
    pooled = [pd.concat([per_query["dl19", s + 3], per_query["dl20", s + 3]]).mean() for s in (0, 1, 2)]
    assert row["pooled"]["seeds"] == pytest.approx(pooled)
    assert row["pooled"]["mean"] == pytest.approx(sum(pooled) / 3)
    assert row["pooled"]["sd"] == pytest.approx(pd.Series(pooled).std(ddof=1))
    assert row["dl19"]["seeds"] == pytest.approx([per_query["dl19", s + 3].mean() for s in (0, 1, 2)])
    # the test vs BM25: seed-averaged per-query values, all 97 held-out queries, paired by query
    d = []
    for year in ("dl19", "dl20"):
        student = sum(per_query[year, s + 3] for s in (0, 1, 2)) / 3
        d += (student - per_query[year, "bm25"].loc[student.index]).to_list()
    t, p = _t_p(d)
    vs_first = row["vs_first_stage"]
    assert vs_first["queries"] == 97 and vs_first["t"] == pytest.approx(t) and vs_first["p"] == pytest.approx(p)
    # Holm over two configurations against BM25; the control equals BM25 here: t 0, p 1
    control = summary["configurations"]["bm25-ranknet"]
    assert (control["vs_first_stage"]["t"], control["vs_first_stage"]["p"]) == (0.0, 1.0)
    assert vs_first["p_adjusted"] == pytest.approx(min(1.0, 2 * p))
    # against the control (BM25's order): the same differences, one test in its family
    assert row["vs_control"]["p"] == pytest.approx(p) and row["vs_control"]["p_adjusted"] == pytest.approx(p)
    assert control["vs_control"] is None and control["is_control"]
    # the teacher's own quality: runs 1, 3 and 4 pooled, mean and sd over them
    own = [pd.concat([per_query["dl19", i], per_query["dl20", i]]).mean() for i in (1, 3, 4)]
    assert row["teacher_own"]["runs"] == 3 and row["teacher_own"]["values"] == pytest.approx(own)
    assert summary["first_stage"]["dl19"] == pytest.approx(0.5058, abs=5e-5)
    # dvc metrics, the table, the figures
    metrics = json.loads((tmp_path / "metrics" / "rankgpt-ranknet.json").read_text())
    assert metrics["nDCG@10"] == pytest.approx(round(sum(pooled) / 3, 4)) and metrics["seeds"] == 3
    table = (tmp_path / "summary.md").read_text()
    assert "| rankgpt-ranknet |" in table and "| bm25-ranknet (control) |" in table and " * (" in table
    assert out.stdout.count("\n") == 5  # header, rule, first stage, two configurations
    assert out.stdout.splitlines()[3].startswith("| rankgpt-ranknet |")  # in the spec's order
    for figure in ("ndcg.png", "per_query.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_query_tsv = pd.read_csv(tmp_path / "per_query.tsv", sep="\t")
    assert len(per_query_tsv) == 2 * 3 * 97 + 97


def test_bad_studies_are_refused(grid: tuple[Path, Path], tmp_path: Path):
    spec_path, runs = grid
    spec = yaml.safe_load(spec_path.read_text())
    one_seed = tmp_path / "one.yaml"
    one_seed.write_text(yaml.safe_dump({**spec, "seeds": [0]}))
    with pytest.raises(InputError, match="at least 2 seeds to show a spread"):
        load_spec(one_seed)
    bad_fold = tmp_path / "fold.yaml"
    bad_fold.write_text(yaml.safe_dump({**spec, "folds": {"dl19": spec["folds"]["dl19"]}}))
    with pytest.raises(InputError, match="trains on 'dl20', which is not a fold"):
        load_spec(bad_fold)
    more_seeds = tmp_path / "more.yaml"
    more_seeds.write_text(yaml.safe_dump({**spec, "seeds": [0, 1, 2, 3]}))
    with pytest.raises(InputError, match=re.escape("missing grid points dl19-3.run, dl20-3.run")):
        collect_runs(runs, load_spec(more_seeds))
    stray = tmp_path / "runs" / "unknown-teacher-ranknet"
    stray.mkdir(parents=True)
    with pytest.raises(InputError, match="not <teacher>-<loss>"):
        collect_runs(tmp_path / "runs", load_spec(spec_path))


def test_prepare_keeps_the_passages_with_text_and_counts_the_rest(dl_store: Path, tmp_path: Path, trec_dl: Path):
    """The llmgar RankZephyr run (a PyTerrier BM25 top-100) against the candidates' corpus store."""
    llmgar = trec_dl.parent.parent / "reference" / "teacher_runs" / "llmgar_pyterrier"
    spec = {
        "seeds": [0, 1],
        "folds": {
            y: {
                "train": o,
                "first_stage": str(dl_store / "runs" / f"retrieve_results_{y}.run"),
                "qrels": str(trec_dl / f"qrels.{y}-passage.txt"),
            }
            for y, o in (("dl19", "dl20"), ("dl20", "dl19"))
        },
        "teachers": {
            "rankzephyr": {
                "known_only": True,
                "runs": {y: str(llmgar / f"{y}.bm25_zephyr.c100.res.gz") for y in ("dl19", "dl20")},
            },
            "bm25": {"runs": {y: str(dl_store / "runs" / f"retrieve_results_{y}.run") for y in ("dl19", "dl20")}},
        },
        "control": "bm25",
        "loss": "ranknet",
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    stats = prepare(load_spec(tmp_path / "params.yaml"), dl_store / "corpus", tmp_path / "data")
    zephyr = stats["dl19"]["rankzephyr"]  # fold dl19 trains on RankZephyr's DL20 rankings
    assert zephyr["queries"] == 54 and zephyr["hits_in_source"] == 5329
    assert zephyr["hits"] + zephyr["dropped_unknown_docs"] == 5329 and 0.7 < zephyr["kept_fraction"] < 0.85
    kept = read_trec_run(tmp_path / "data" / "dl19" / "teacher-rankzephyr.run")
    assert len(kept) == zephyr["hits"] and kept.groupby("qid")["rank"].min().eq(1).all()
    assert stats["dl19"]["bm25"]["hits"] == 5400 and stats["dl20"]["first_stage"]["queries"] == 43
    assert len(load_qrels(tmp_path / "data" / "dl20" / "train.qrels")) == len(
        load_qrels(trec_dl / "qrels.dl19-passage.txt")
    )
    # without known_only the same run is refused, naming the first line whose passage has no text
    spec["teachers"]["rankzephyr"]["known_only"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(InputError, match=r"dl20.bm25_zephyr.c100.res.gz:\d+: doc '\d+' is not in the corpus"):
        prepare(load_spec(tmp_path / "params.yaml"), dl_store / "corpus", tmp_path / "data2")


def test_study_grid_resolves_and_the_demo_is_one_of_its_points():
    """DVC resolves study/dvc.yaml to the grid of study/params.yaml, and the demo's student settings
    are the study's: the demo's student (teacher rankvicuna, held-out dl19, seed 0) is a grid point."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    study = yaml.safe_load((REPO / "study" / "params.yaml").read_text())
    assert study["loss"] == params["student"]["loss"]
    assert params["student"]["seed"] in study["seeds"] and len(study["seeds"]) >= 3
    assert (
        params["teacher"]["tag"] == "rankvicuna"
        and study["teachers"]["rankvicuna"]["runs"]["dl20"] == "data/teacher/dl20.run"
    )
    assert params["train"]["run"] == study["folds"]["dl19"]["first_stage"].replace("dl19", "dl20")
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "stage", "list", "study/dvc.yaml", "--name-only"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    points = [n for n in names if "student" in n]
    teachers, folds, seeds = len(study["teachers"]), len(study["folds"]), len(study["seeds"])
    assert len(points) == (teachers + len(study["second_loss"]["teachers"])) * folds * seeds
    assert "study/dvc.yaml:student@rankvicuna-dl19-0" in names and "study/dvc.yaml:report" in names
