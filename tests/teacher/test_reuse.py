"""A teacher never pays twice for a window: a changed first stage, more queries or an earlier
log given with --reuse cost only the windows whose prompt is new, and the output equals a run
from scratch. Real model: the tiny Mistral on the transformers backend (batch 1, greedy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.contract.reply_log import read_reply_log
from tests.teacher.conftest import log_records

pytestmark = pytest.mark.engine


def rerank(dl_store: Path, model: Path, run: Path, out: Path, *extra: str) -> dict:
    argv = ["rerank", "--run", str(run), "--queries", str(dl_store / "queries.tsv")]
    argv += ["--corpus", str(dl_store / "corpus"), "--backend", "transformers", "--batch-size", "1"]
    argv += ["--model", str(model), "--max-new-tokens", "12", "--out", str(out), "--no-progress", *extra]
    assert main(argv) == 0
    return json.loads(out.with_name(out.name + ".stats.json").read_text())


def first_queries(run: Path, n: int, out: Path, swap: str | None = None) -> Path:
    """The first n queries of a run; with `swap` (a qid), its candidates at ranks 90 and 91 change places."""
    lines = run.read_text().splitlines()
    qids = list(dict.fromkeys(line.split()[0] for line in lines))[:n]
    kept = [line.split() for line in lines if line.split()[0] in qids]
    if swap is not None:
        rows = [f for f in kept if f[0] == swap]
        a, b = rows[89], rows[90]
        a[2], b[2] = b[2], a[2]
    out.write_text("".join(" ".join(f) + "\n" for f in kept))
    return out


def hashes(out: Path) -> set[str]:
    return {r["prompt_sha256"] for _, r in read_reply_log(out.with_name(out.name + ".log.jsonl"))}


def test_a_changed_first_stage_reuses_every_unchanged_window(dl_store: Path, tiny_mistral: Path, tmp_path: Path):
    dl19 = dl_store / "runs" / "retrieve_results_dl19.run"
    before = first_queries(dl19, 2, tmp_path / "before.run")
    changed_qid = before.read_text().split()[0]
    after = first_queries(dl19, 3, tmp_path / "after.run", swap=changed_qid)  # one query changed, one added

    out = tmp_path / "teacher" / "t.run"
    rerank(dl_store, tiny_mistral, before, out)
    earlier = hashes(out)
    stats = rerank(dl_store, tiny_mistral, after, out)  # same --out: the log is another run's now
    fresh = tmp_path / "fresh" / "t.run"
    rerank(dl_store, tiny_mistral, after, fresh)

    assert out.read_text() == fresh.read_text()
    strip = lambda records: [{k: v for k, v in r.items() if k != "reused_from"} for r in records]  # noqa: E731
    assert strip(log_records(out)) == strip(log_records(fresh))
    same_prompt = len(hashes(fresh) & earlier)
    assert stats["windows"] == 27 and stats["windows_reused"] == same_prompt >= 9  # one query unchanged
    assert stats["provenance"]["backend"]["windows_computed"] == 27 - same_prompt
    stale = [p for p in out.parent.glob("t.run.log.jsonl.stale-*") if not p.name.endswith(".json")]
    assert len(stale) == 1 and hashes_of(stale[0]) == earlier  # moved aside whole, never mixed in


def hashes_of(log: Path) -> set[str]:
    return {r["prompt_sha256"] for _, r in read_reply_log(log)}


def test_more_queries_resume_and_reuse_logs_never_load_the_model(dl_store: Path, tiny_mistral: Path, tmp_path: Path):
    dl19 = dl_store / "runs" / "retrieve_results_dl19.run"
    out = tmp_path / "t.run"
    rerank(dl_store, tiny_mistral, dl19, out, "--max-queries", "1")
    stats = rerank(dl_store, tiny_mistral, dl19, out, "--max-queries", "2")
    assert (stats["windows_resumed_from_log"], stats["windows_reused"], stats["windows"]) == (9, 0, 18)
    # another output, the first log given with --reuse: every reply is taken, no model is opened
    again = tmp_path / "again.run"
    stats = rerank(
        dl_store, tiny_mistral, dl19, again, "--max-queries", "2", "--reuse", str(tmp_path / "t.run.log.jsonl")
    )
    assert again.read_text() == out.read_text()
    assert stats["windows_reused"] == 18
    assert stats["provenance"]["backend"] == {
        "backend": "transformers",
        "windows_reused": 18,
        "windows_computed": 0,
        "reuse_sources": [str(tmp_path / "t.run.log.jsonl")],
    }


def test_replies_of_another_model_are_not_reused(dl_store: Path, tiny_mistral: Path, tmp_path: Path):
    dl19 = dl_store / "runs" / "retrieve_results_dl19.run"
    one = ("--max-queries", "1", "--depth", "20")  # one window
    rerank(dl_store, tiny_mistral, dl19, tmp_path / "a.run", *one)
    sidecar = tmp_path / "a.run.log.jsonl.settings.json"
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "model": "some/other-model"}))
    stats = rerank(dl_store, tiny_mistral, dl19, tmp_path / "b.run", *one, "--reuse", str(tmp_path / "a.run.log.jsonl"))
    assert stats["windows_reused"] == 0 and stats["provenance"]["backend"]["windows_computed"] == 1
