"""Empty inputs are clear errors (status 2, naming the file) in every stage that reads them,
before any model loads: `--model /nonexistent` would fail differently if one were loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main


@pytest.fixture
def inputs(dl_store: Path, trec_dl: Path, tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "empty").write_text("")
    (tmp_path / "blank").write_text("\n  \n")
    stats = tmp_path / "teacher.run.stats.json"
    stats.write_text(json.dumps({"queries": 43, "provenance": {"depth": 100}}))
    return {
        "empty": tmp_path / "empty",
        "blank": tmp_path / "blank",
        "run": dl_store / "runs" / "retrieve_results_dl19.run",
        "queries": dl_store / "queries.tsv",
        "corpus": dl_store / "corpus",
        "qrels": trec_dl / "qrels.dl19-passage.txt",
        "stats": stats,
        "out": tmp_path / "out",
    }


def command(name: str, p: dict[str, Path], run: Path, queries: Path) -> list[str]:
    """The argv of stage `name` reading `run` (the one under test) and `queries`."""
    rerank = ["rerank", "--run", str(run), "--queries", str(queries), "--corpus", str(p["corpus"])]
    return {
        "evaluate": ["evaluate", str(run), "--qrels", str(p["qrels"])],
        "rerank": [*rerank, "--backend", "vllm", "--model", "/nonexistent", "--out", str(p["out"])],
        "rerank cross-encoder": [
            *rerank,
            "--backend",
            "cross-encoder",
            "--model",
            "/nonexistent",
            "--out",
            str(p["out"]),
        ],
        "merge-shards": ["merge-shards", "--run", str(run), "--out", str(p["out"]), str(p["run"])],
        "export": [
            *("export", "--first-stage", str(p["run"]), "--teacher", str(run), "--teacher-stats", str(p["stats"])),
            *("--queries", str(queries), "--out", str(p["out"])),
        ],
        "train": [
            *("train", "--stage", "infonce", "--run", str(run), "--qrels", str(p["qrels"]), "--queries", str(queries)),
            *("--corpus", str(p["corpus"]), "--model", "/nonexistent", "--out", str(p["out"]), "--no-progress"),
        ],
        "report agreement": ["report", "agreement", "--pair", "dl19", str(run), str(p["run"]), "--out", str(p["out"])],
    }[name]


STAGES = ["evaluate", "rerank", "rerank cross-encoder", "merge-shards", "export", "train", "report agreement"]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("file", ["empty", "blank"])
def test_a_run_without_rankings(inputs: dict[str, Path], capsys, stage: str, file: str):
    assert main(command(stage, inputs, inputs[file], inputs["queries"])) == 2
    err = capsys.readouterr().err
    assert f"error: {inputs[file]}: the run holds no rankings (empty file)" in err, err


@pytest.mark.parametrize("stage", ["rerank", "rerank cross-encoder", "export", "train"])
def test_a_queries_file_without_queries(inputs: dict[str, Path], capsys, stage: str):
    assert main(command(stage, inputs, inputs["run"], inputs["blank"])) == 2
    err = capsys.readouterr().err
    assert f"error: {inputs['blank']}: no queries (empty file)" in err, err


def test_empty_qrels_and_corpus(inputs: dict[str, Path], capsys):
    assert main(["evaluate", str(inputs["run"]), "--qrels", str(inputs["empty"])]) == 2
    assert f"error: {inputs['empty']}: the qrels hold no judgments (empty file)" in capsys.readouterr().err
    assert main(["ingest", "corpus", str(inputs["blank"]), "--out", str(inputs["out"])]) == 2
    assert f"error: {inputs['blank']}: corpus is empty" in capsys.readouterr().err
    assert not inputs["out"].exists()
