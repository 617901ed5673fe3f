"""Crash safety: kill -9 the teacher mid-run, run the same command again, get the same output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.teacher.reply_log import read_reply_log
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


@pytest.mark.engine
def test_kill_and_resume_gives_identical_output(dl_store: Path, tiny_mistral: Path, tmp_path: Path):
    n_queries = 4
    whole = tmp_path / "whole" / "teacher.run"
    subprocess.run(teacher_command(dl_store, tiny_mistral, whole, n_queries), check=True, capture_output=True)

    crashed = tmp_path / "crashed" / "teacher.run"
    log_path = crashed.with_name("teacher.run.log.jsonl")
    proc = subprocess.Popen(
        teacher_command(dl_store, tiny_mistral, crashed, n_queries),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log_path.exists() and len(log_path.read_bytes().splitlines()) >= 15:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = len(list(read_reply_log(log_path)))
    assert 15 <= logged < 9 * n_queries and not crashed.exists()
    # a write cut short by the crash leaves a partial last line: it must be dropped
    with open(log_path, "a") as f:
        f.write('{"qid": "partial", "wind')

    result = subprocess.run(teacher_command(dl_store, tiny_mistral, crashed, n_queries), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert crashed.read_text() == whole.read_text()
    keys = [(r["qid"], r["window"]) for _, r in read_reply_log(log_path)]
    assert len(keys) == len(set(keys)) == 9 * n_queries
    stats = json.loads(crashed.with_name("teacher.run.stats.json").read_text())
    assert stats["windows"] == 9 * n_queries and stats["windows_resumed_from_log"] == logged
    assert stats["provenance"]["prompt_sha256"] and stats["provenance"]["versions"]["transformers"]


def test_changed_settings_refuse_to_resume(dl_store: Path, tiny_mistral: Path, tmp_path: Path):
    out = tmp_path / "t.run"
    log_path = tmp_path / "t.run.log.jsonl"
    log_path.write_text("")
    (tmp_path / "t.run.log.jsonl.settings.json").write_text(json.dumps({"window": 10}))
    result = subprocess.run(teacher_command(dl_store, tiny_mistral, out, 1), capture_output=True, text=True)
    assert result.returncode == 2 and "written with other settings" in result.stderr


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
    )
    assert result.returncode == 2
    assert f"{bad_run}:4: doc 'no-such-passage' is not in the corpus" in result.stderr
