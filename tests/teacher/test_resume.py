"""Crash safety: kill -9 the teacher mid-run, run the same command again, get the same output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.contract.reply_log import read_reply_log
from pipeline.infra.crash_points import VARIABLE, crash_point_setting, wait_for_crash_point
from tests.teacher.conftest import dl19_inputs


def teacher_command(dl_store: Path, model: Path, out: Path, n_queries: int) -> list[str]:
    # transformers backend with batch size 1: no engine start, and no padding, so each
    # window's reply does not depend on which other windows share its batch
    return [
        sys.executable,
        "-m",
        "pipeline",
        "rerank",
        *dl19_inputs(dl_store),
        "--backend",
        "transformers",
        "--batch-size",
        "1",
        "--model",
        str(model),
        "--max-queries",
        str(n_queries),
        "--max-new-tokens",
        "12",
        "--out",
        str(out),
        "--no-progress",
        "--tag",
        "tiny-teacher",
    ]


@pytest.mark.timeout(1800)
@pytest.mark.engine
def test_kill_and_resume_gives_identical_output(dl_store: Path, tiny_mistral: Path, tmp_path: Path):
    n_queries = 4
    whole = tmp_path / "whole" / "teacher.run"
    command = teacher_command(dl_store, tiny_mistral, whole, n_queries)
    subprocess.run(command, check=True, capture_output=True, timeout=600)

    crashed = tmp_path / "crashed" / "teacher.run"
    log_path = crashed.with_name("teacher.run.log.jsonl")
    marker = tmp_path / "stopped"  # the run stops itself after its 10th window of 36, and is killed there
    env = {**os.environ, VARIABLE: crash_point_setting("reply-log", 10, marker)}
    proc = subprocess.Popen(
        teacher_command(dl_store, tiny_mistral, crashed, n_queries),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_crash_point(marker, lambda: proc.poll() is None) == proc.pid
    finally:
        proc.kill()  # SIGKILL: the crash under test
        proc.wait(timeout=60)
    logged = len(list(read_reply_log(log_path)))
    assert logged == 10 and not crashed.exists()
    # a write cut short by the crash leaves a partial last line: it must be dropped
    with open(log_path, "a") as f:
        f.write('{"qid": "partial", "wind')

    result = subprocess.run(
        teacher_command(dl_store, tiny_mistral, crashed, n_queries), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert crashed.read_text() == whole.read_text()
    keys = [(r["qid"], r["window"]) for _, r in read_reply_log(log_path)]
    assert len(keys) == len(set(keys)) == 9 * n_queries
    stats = json.loads(crashed.with_name("teacher.run.stats.json").read_text())
    assert stats["windows"] == 9 * n_queries and stats["windows_resumed_from_log"] == logged
    assert stats["provenance"]["prompt_sha256"] and stats["provenance"]["versions"]["transformers"]


def test_a_log_of_other_settings_is_moved_aside_not_mixed(dl_store: Path, tiny_mistral: Path, tmp_path: Path):
    out = tmp_path / "t.run"
    log_path = tmp_path / "t.run.log.jsonl"
    log_path.write_text("")
    (tmp_path / "t.run.log.jsonl.settings.json").write_text(json.dumps({"window": 10}))
    result = subprocess.run(
        teacher_command(dl_store, tiny_mistral, out, 1), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "settings changed" in result.stderr
    stale = list(tmp_path.glob("t.run.log.jsonl.stale-*"))
    assert [p.name.endswith(".settings.json") for p in sorted(stale)] == [False, True]
    assert len(list(read_reply_log(log_path))) == 9


def test_unknown_doc_fails_before_any_model(dl_store: Path, tmp_path: Path):
    bad_run = tmp_path / "bad.run"
    lines = (dl_store / "runs" / "retrieve_results_dl19.run").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split()[2], "no-such-passage")
    bad_run.write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "rerank",
            "--run",
            str(bad_run),
            "--queries",
            str(dl_store / "queries.tsv"),
            "--corpus",
            str(dl_store / "corpus"),
            "--backend",
            "vllm",
            "--model",
            "/nonexistent",
            "--out",
            str(tmp_path / "o.run"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2
    assert f"{bad_run}:4: doc 'no-such-passage' is not in the corpus" in result.stderr
