"""The DVC pipeline after `make demo`: a second `dvc repro` is a no-op, a parameter change
re-runs exactly the stages downstream of it, and `dvc metrics show` prints every stage.

Marked `demo`: it needs the outputs of `make demo` in the workspace (`make demo-check` runs
it; .ci/run runs both). It works on a copy of the workspace, so the real one is untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.demo

ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def dvc(workdir: Path, *args: str) -> str:
    result = subprocess.run(["dvc", *args], cwd=workdir, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (REPO / "dvc.lock").exists() or not (REPO / "data" / "metrics").is_dir():
        pytest.fail("run `make demo` first: these checks read its outputs")
    copy = tmp_path_factory.mktemp("ws") / REPO.name
    # the shared data sits beside the repository (data_dir: ../shared/...): keep that layout
    (copy.parent / "shared").symlink_to(REPO.parent / "shared")
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".venv", ".cache", "__pycache__", ".pytest_cache"))
    return copy


def stages_that_would_run(workdir: Path) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", dvc(workdir, "repro", "--dry")))


def test_second_repro_is_a_no_op(workspace: Path):
    assert stages_that_would_run(workspace) == set()
    assert "Data and pipelines are up to date" in dvc(workspace, "repro")


def test_a_teacher_param_reruns_exactly_the_downstream_stages(workspace: Path):
    params_path = workspace / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    # windows of 10 (stride 10) change every query's windows and so the teacher's rankings;
    # stage 1 of the student learns from relevance labels, not the teacher: it must not re-run
    params["teacher"]["window"] = 10
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    ran = set(re.findall(r"Running stage '([^']+)'", dvc(workspace, "repro")))
    assert ran == {
        "teacher@dl19",
        "teacher@dl20",
        "teacher_train",
        "dataset",
        "student_distill",
        *(f"student_rerank@{engine}-{s}" for engine in ("bm25", "colbert") for s in ("dl19", "dl20")),
        "evaluate@teacher-dl19",
        "evaluate@teacher-dl20",
        *(f"evaluate@student-{engine}-{s}" for engine in ("bm25", "colbert") for s in ("dl19", "dl20")),
        "report",
    }
    # the old reply logs were moved aside, not lost
    assert list((workspace / "data" / "teacher").glob("train.run.log.jsonl.stale-*"))


def test_metrics_and_plots_show_every_stage(workspace: Path):
    table = dvc(workspace, "metrics", "show")
    for engine in ("bm25", "colbert"):
        for eval_set in ("dl19", "dl20"):
            for name in (f"{engine}-{eval_set}", f"student-{engine}-{eval_set}", f"teacher-{eval_set}"):
                assert f"data/metrics/{name}.json" in table
    ndcg = pd.read_csv(workspace / "data" / "plots" / "ndcg.csv")
    assert len(ndcg) == 12 and set(ndcg["set"]) == {"dl19", "dl20"}
    assert ndcg["nDCG@10"].between(0, 1).all()
    agreement = pd.read_csv(workspace / "data" / "plots" / "agreement.csv", dtype={"qid": str})
    assert agreement.groupby("set").size().to_dict() == {"dl19": 4, "dl20": 4, "train": 8}
    assert agreement["kendall_tau"].between(-1, 1).all()
    shown = dvc(workspace, "plots", "show", "--json")
    assert "data/plots/ndcg.csv" in shown and "data/plots/agreement.csv" in shown
