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


def test_the_paper_profile_sets_exactly_the_demo_knobs():
    demo, paper = load(REPO / "params.yaml"), load(REPO / "profiles" / "paper.yaml")
    assert keys(demo) == keys(paper)
    assert demo["profile"] == "demo" and paper["profile"] == "paper"
    assert paper["corpus"] == "irds:msmarco-passage" and demo["corpus"] == "candidates"
    assert paper["train"]["queries"] == "irds:msmarco-passage/train/judged" and paper["train"]["sample"] == 10000
    assert paper["train"]["first_stage"] == "colbert" and paper["colbert"]["checkpoint"] == "colbert-ir/colbertv2.0"
    assert paper["teacher"]["model"] == "castorini/rank_zephyr_7b_v1_full"
    assert (paper["teacher"]["window"], paper["teacher"]["stride"], paper["teacher"]["depth"]) == (20, 10, 100)


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


@pytest.mark.parametrize(("profile", "first_stage"), [("params.yaml", "bm25"), ("profiles/paper.yaml", "colbert")])
def test_dvc_resolves_the_stage_graph_of_each_profile(profile: str, first_stage: str, tmp_path: Path):
    graph = edges(REPO / profile, tmp_path)
    stages = {stage for edge in graph for stage in edge}
    for engine in ("bm25", "colbert"):
        assert {f"retrieve_{engine}@{s}" for s in ("dl19", "dl20", "train")} <= stages
        assert {f"student_rerank@{engine}-dl19", f"evaluate@student-{engine}-dl20"} <= stages
    assert (f"retrieve_{first_stage}@train", "teacher_train") in graph
    other = "bm25" if first_stage == "colbert" else "colbert"
    assert (f"retrieve_{other}@train", "teacher_train") not in graph
    assert ("train_queries", f"retrieve_{first_stage}@train") in graph
    assert ("teacher_train", "dataset") in graph and ("dataset", "student_distill") in graph
    assert ("train_queries", "student_stage1") in graph and ("evaluate@teacher-dl19", "report") in graph
