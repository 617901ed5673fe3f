"""Dataset fixtures: a real teacher run (RankVicuna-7B's logged DL19 replies, replayed through
`distillm rerank`) and the dataset exported from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.conftest import SHARED_DATA

REFERENCE = SHARED_DATA  # the data folder; the teachers' reference runs lie beside it
REPLIES = REFERENCE.resolve().parent / "reference" / "teacher_runs" / "rankvicuna7b" / "prompts_responses_dl19.json"


@pytest.fixture(scope="session")
def teacher_dl19(dl_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`distillm rerank --backend replay:LOG` over DL19's BM25 top-100: 43 queries x 100, 9 windows each."""
    from pipeline.teacher.recorded_replies import ingest_files

    if not REPLIES.is_file():
        pytest.fail(f"reference replies not found: {REPLIES}")
    work = tmp_path_factory.mktemp("teacher")
    first_stage = dl_store / "runs" / "retrieve_results_dl19.run"
    log = work / "rankvicuna.replies.jsonl"
    counts = ingest_files(
        REPLIES,
        first_stage,
        dl_store / "queries.tsv",
        dl_store / "corpus",
        "rank_vicuna",
        "castorini/rank_vicuna_7b_v1",
        log,
    )
    assert counts["windows_matched_by_prompt"] == 387
    teacher = work / "rankvicuna.run"
    argv = ["rerank", "--run", str(first_stage), "--queries", str(dl_store / "queries.tsv")]
    argv += ["--corpus", str(dl_store / "corpus"), "--backend", f"replay:{log}", "--prompt", "rank_vicuna"]
    argv += ["--model", "castorini/rank_vicuna_7b_v1", "--out", str(teacher), "--tag", "rankvicuna", "--no-progress"]
    assert main(argv) == 0
    return {
        "first_stage": first_stage,
        "teacher": teacher,
        "stats": teacher.with_name(teacher.name + ".stats.json"),
        "queries": dl_store / "queries.tsv",
        "corpus": dl_store / "corpus",
    }


def export_argv(teacher_dl19: dict[str, Path], out: Path, *extra: str) -> list[str]:
    t = teacher_dl19
    argv = ["export", "--first-stage", str(t["first_stage"]), "--teacher", str(t["teacher"])]
    argv += ["--teacher-stats", str(t["stats"]), "--queries", str(t["queries"]), "--out", str(out)]
    return [*argv, "--dataset-id", "msmarco-passage/trec-dl-2019/judged", *extra]


@pytest.fixture(scope="session")
def dataset_dl19(teacher_dl19: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DL19 teacher run exported with passage text, one shard. Tests copy it before changing it."""
    out = tmp_path_factory.mktemp("export") / "rank-distillm-dl19"
    extra = ("--corpus", str(teacher_dl19["corpus"]), "--with-text", "--first-stage-name", "bm25")
    assert main(export_argv(teacher_dl19, out, *extra)) == 0
    return out


@pytest.fixture
def dataset_copy(dataset_dl19: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(dataset_dl19, copy)
    return copy
