"""The two parameter profiles of the DVC pipeline: the demo (`params.yaml`) and the paper's
(`profiles/paper.yaml`). The paper profile cannot run here (GPU, internet), so we check what
can be checked offline: it sets exactly the demo's knobs, and DVC resolves the same stage
graph from it, with the training set coming from ColBERTv2 over MS MARCO."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out |= keys(value, f"{name}.") if isinstance(value, dict) else {name}
    return out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# lists of runs, not knobs: each profile names the runs it re-ranks and evaluates
RUN_LISTS = ("student_runs", "evaluate")


def test_the_paper_profile_sets_exactly_the_demo_knobs():
    demo, paper = load(REPO / "params.yaml"), load(REPO / "profiles" / "paper.yaml")
    knobs = lambda profile: {k for k in keys(profile) if k.split(".")[0] not in RUN_LISTS}  # noqa: E731
    assert knobs(demo) == knobs(paper)
    assert demo["profile"] == "demo" and paper["profile"] == "paper"
    assert paper["corpus"] == "irds:msmarco-passage" and demo["corpus"] == "candidates"
    assert paper["train"]["queries"] == "irds:msmarco-passage/train/judged" and paper["train"]["sample"] == 10000
    assert paper["train"]["first_stage"] == "colbert" and paper["colbert"]["checkpoint"] == "colbert-ir/colbertv2.0"
    assert paper["train"]["run"] == "data/runs/colbert-train.run"
    assert paper["teacher"]["model"] == "castorini/rank_zephyr_7b_v1_full" and paper["teacher"]["backend"] == "vllm"
    assert (paper["teacher"]["window"], paper["teacher"]["stride"], paper["teacher"]["depth"]) == (20, 10, 100)
    # the demo's teacher is real and recorded: RankVicuna-7B's replies, replayed
    assert demo["teacher"]["backend"] == "replay:data/teacher/recorded"
    assert demo["teacher"]["model"] == demo["recorded"]["model"] == "castorini/rank_vicuna_7b_v1"
    # every evaluated run is produced by a stage, and every number says what it is
    for profile in (demo, paper):
        for name, entry in profile["evaluate"].items():
            assert name.startswith(entry["set"] + "-") and entry["about"], name
    assert {"dl19-student", "dl19-control", "dl19-teacher", "dl19-bm25"} <= set(demo["evaluate"])


def edges(profile: Path, tmp_path: Path) -> set[tuple[str, str]]:
    """The stage graph DVC resolves from dvc.yaml with this params file (no data needed)."""
    work = tmp_path / profile.stem
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copy(profile, work / "params.yaml")
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=work, env=ENV, check=True, timeout=120)
    done = subprocess.run(["dvc", "dag", "--dot"], cwd=work, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(re.findall(r'"([^"]+)" -> "([^"]+)"', done.stdout))


@pytest.mark.parametrize(
    ("profile", "train_run", "evaluated"),
    [
        ("params.yaml", None, {"dl19-student", "dl19-control", "dl19-pool-colbert"}),
        ("profiles/paper.yaml", "retrieve_colbert@train", {"dl20-student-colbert", "dl20-control"}),
    ],
)
def test_dvc_resolves_the_stage_graph_of_each_profile(profile: str, train_run: str | None, evaluated, tmp_path: Path):
    graph = edges(REPO / profile, tmp_path)
    stages = {stage for edge in graph for stage in edge}
    for engine in ("bm25", "colbert"):
        assert {f"retrieve_{engine}@{s}" for s in ("dl19", "dl20", "train")} <= stages
    assert {f"evaluate@{name}" for name in evaluated} <= stages
    producer = train_run or "ingest"  # the demo trains on the BM25 top-100 the recorded teacher saw
    assert (producer, "teacher_train") in graph and (producer, "control_dataset") in graph
    assert ("retrieve_bm25@train", "teacher_train") not in graph
    assert ("recorded", "teacher_train") in graph and ("recorded", "teacher@dl19") in graph
    assert ("retrieve_bm25@train", "teacher_engine") in graph
    assert ("teacher_train", "dataset") in graph and ("dataset", "student_distill@student") in graph
    assert ("control_dataset", "student_distill@control") in graph
    assert ("student_stage1", "student_distill@control") in graph
    assert ("student_distill@student", "student_rerank@dl19") in graph
    assert ("student_distill@control", "control_rerank@dl19") in graph
    assert ("train_queries", "student_stage1") in graph and ("evaluate@dl19-teacher", "report") in graph
