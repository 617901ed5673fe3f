"""The DVC pipeline after `make demo`: a second `dvc repro` is a no-op; the teacher's rows are
rank_llm's own runs; `dvc metrics show` is one nDCG@10 row per run, each saying what it is; a
first-stage change re-runs exactly what follows it and costs the teacher only its new windows.

Marked `demo`: it needs the outputs of `make demo` in the workspace (`make demo-check` runs
it; .ci/run runs both). It works on a copy of the workspace, so the real one is untouched.
DVC runs as a user's shell would after `source .venv/bin/activate` (the venv's bin on PATH).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.contract.reply_log import read_reply_log
from pipeline.contract.run import ranked_lists, read_trec_run
from tests.conftest import REPO, SHARED_DATA

# a first-stage change re-runs the engine check (vLLM start) and a clean run is made to compare
pytestmark = [pytest.mark.demo, pytest.mark.timeout(3600)]

ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
RANKVICUNA = SHARED_DATA.parent / "reference" / "teacher_runs" / "rankvicuna7b"


def run(workdir: Path, *argv: str) -> str:
    result = subprocess.run(argv, cwd=workdir, env=ENV, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def dvc(workdir: Path, *args: str) -> str:
    return run(workdir, "dvc", *args)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (REPO / "dvc.lock").exists() or not (REPO / "data" / "metrics").is_dir():
        pytest.fail("run `make demo` first: these checks read its outputs")
    copy = tmp_path_factory.mktemp("ws") / REPO.name
    # data/shared is a link to the data (`make data`): copied as a link
    ignore = shutil.ignore_patterns(".venv", ".venv-*", ".cache", "__pycache__", ".pytest_cache")
    shutil.copytree(REPO, copy, symlinks=True, ignore=ignore)
    return copy


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def set_param(workdir: Path, section: str, key: str, value) -> None:
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def log_hashes(path: Path) -> set[str]:
    return {r["prompt_sha256"] for _, r in read_reply_log(path)}


def stats(workdir: Path, name: str) -> dict:
    return json.loads((workdir / "data" / "teacher" / f"{name}.run.stats.json").read_text())


def test_second_repro_is_a_no_op(workspace: Path):
    assert stages_run(dvc(workspace, "repro", "--dry")) == set()
    assert "Data and pipelines are up to date" in dvc(workspace, "repro")


def test_the_teacher_is_rank_llms_recorded_rankvicuna_run_query_for_query(workspace: Path):
    for year, n in (("19", 43), ("20", 54)):
        ours = ranked_lists(read_trec_run(workspace / "data" / "teacher" / f"dl{year}.run"))
        theirs = ranked_lists(read_trec_run(RANKVICUNA / f"run_dl{year}.txt"))
        assert len(ours) == n and all(ours[q][:100] == theirs[q][:100] for q in theirs)
        teacher = stats(workspace, f"dl{year}")
        matched = teacher["provenance"]["backend"]["matched"]
        # every window found by its prompt: by this run, or by the earlier run of the stage whose
        # log it resumed (a `make demo` after an interrupted one, or after an upstream change)
        assert matched["qid_window"] == 0
        assert matched["prompt_sha256"] + teacher["windows_resumed_from_log"] == 9 * n == teacher["windows"]


def test_metrics_are_one_ndcg_row_per_run_saying_what_it_is(workspace: Path):
    shown = json.loads(dvc(workspace, "metrics", "show", "--json"))
    demo = {path: entry for path, entry in shown[""]["data"].items() if path.startswith("data/metrics/")}
    files = {Path(path).stem: entry["data"] for path, entry in demo.items()}
    assert {"dl19-bm25", "dl19-teacher", "dl19-student", "dl19-control", "dl20-teacher"} <= set(files)
    for name, values in files.items():
        assert set(values) == {"nDCG@10", "queries", "about"} and values["about"], name
    assert files["dl19-teacher"]["nDCG@10"] == pytest.approx(0.6682, abs=5e-5)  # rank_llm's run
    assert files["dl20-teacher"]["nDCG@10"] == pytest.approx(0.6611, abs=5e-5)
    assert files["dl19-bm25"]["nDCG@10"] == pytest.approx(0.5058, abs=5e-5)
    assert files["dl19-student"]["queries"] == files["dl19-control"]["queries"] == 43
    # one seed on one fold: whether the student beats its control or BM25 is the study's question
    # (make study: seeds x folds, paired tests); here only that both are real re-rankings
    bm25 = ranked_lists(read_trec_run(workspace / "data" / "ingest" / "runs" / "retrieve_results_dl19.run"))
    for name in ("student", "control"):
        assert 0 < files[f"dl19-{name}"]["nDCG@10"] < 1
        reranked = ranked_lists(read_trec_run(workspace / "data" / name / "dl19.run"))
        assert reranked.keys() == bm25.keys() and any(reranked[q][:10] != bm25[q][:10] for q in bm25)
    ndcg = pd.read_csv(workspace / "data" / "plots" / "ndcg.csv")
    assert set(ndcg["name"]) == set(files) and ndcg["nDCG@10"].between(0, 1).all()
    agreement = pd.read_csv(workspace / "data" / "plots" / "agreement.csv", dtype={"qid": str})
    assert agreement.groupby("set").size().to_dict() == {"dl19": 43, "dl20": 54, "train": 54}


def test_plots_are_images_that_show_offline(workspace: Path):
    """`dvc plots show` embeds PNG files: the page loads nothing from the internet (vega's CDN)."""
    dvc(workspace, "plots", "show", "-o", "plots-html")
    page = (workspace / "plots-html" / "index.html").read_text()
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    images = re.findall(r'<img src="([^"]+)"', page)
    demo = [src for src in images if "data_plots" in src]  # (study/results' figures, once committed, too)
    assert len(demo) == 3, images  # nDCG@10 per run, teacher agreement, loss curves
    for src in images:
        assert (workspace / "plots-html" / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_first_stage_change_reruns_what_follows_and_pays_only_for_new_windows(workspace: Path, tmp_path: Path):
    log = workspace / "data" / "teacher" / "engine-check.run.log.jsonl"
    before = log_hashes(log)
    set_param(workspace, "bm25", "k1", 1.2)
    ran = stages_run(dvc(workspace, "repro"))
    assert ran == {
        *(f"retrieve_bm25@{s}" for s in ("dl19", "dl20", "train")),
        "teacher_engine",
        "evaluate@dl19-pool-bm25",
        "evaluate@dl20-pool-bm25",
        "report",
    }
    # the old reply log is set aside whole, and its replies answered every unchanged prompt
    stale = [p for p in log.parent.glob("engine-check.run.log.jsonl.stale-*") if p.suffix != ".json"]
    assert len(stale) == 1 and log_hashes(stale[0]) == before
    after = stats(workspace, "engine-check")
    assert after["windows_reused"] == len(log_hashes(log) & before)
    assert after["provenance"]["backend"]["windows_computed"] == after["windows"] - after["windows_reused"]
    # the same output as a clean run of the same command
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    argv = shlex.split(lock["stages"]["teacher_engine"]["cmd"])
    clean = tmp_path / "clean.run"
    argv[argv.index("--out") + 1] = str(clean)
    run(workspace, *argv)
    assert clean.read_text() == (workspace / "data" / "teacher" / "engine-check.run").read_text()


def test_a_teacher_change_that_leaves_every_prompt_alone_costs_no_model_call(workspace: Path):
    """DL passages are at most 216 words: a 250-word budget changes no prompt. (A full repro would
    then export the dataset with its new provenance and train the students again: minutes.)"""
    before = (workspace / "data" / "teacher" / "train.run").read_text()
    set_param(workspace, "teacher", "max_words", 250)
    assert stages_run(dvc(workspace, "repro", "teacher_train", "teacher_engine")) == {"teacher_train", "teacher_engine"}
    assert (workspace / "data" / "teacher" / "train.run").read_text() == before
    assert stats(workspace, "train")["provenance"]["max_words"] == 250
    engine = stats(workspace, "engine-check")
    assert engine["windows_reused"] == engine["windows"] > 0
    assert engine["provenance"]["backend"]["windows_computed"] == 0  # the model was never loaded
