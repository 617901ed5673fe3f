"""The reply log's reading contract: only a partial last line is a crash artefact; any other bad
line is an error naming the file and line, whether the log is read to resume, replayed or merged
(merge: tests/teacher/test_scale_out.py); it is read one line at a time."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.contract.reply_log import ReplyLogWriter, read_reply_log
from pipeline.infra.errors import InputError
from tests.teacher.conftest import dl19_inputs


def write_log(path: Path, n: int, reply: str = "[2] > [1]") -> list[dict]:
    records = [{"qid": f"q{i // 9}", "window": i % 9, "reply": reply} for i in range(n)]
    with ReplyLogWriter(path) as writer:
        for record in records:
            writer.write(record)
    return records


def test_a_partial_last_line_is_skipped_and_cut_only_when_asked(tmp_path: Path):
    log = tmp_path / "log.jsonl"
    records = write_log(log, 3)
    complete = log.read_bytes()
    with open(log, "ab") as f:
        f.write(b'{"qid": "q0", "wind')  # a write cut short by kill -9
    assert [r for _, r in read_reply_log(log)] == records
    assert log.read_bytes() == complete + b'{"qid": "q0", "wind'
    assert [(n, r) for n, r in read_reply_log(log, repair_tail=True)] == list(enumerate(records, start=1))
    assert log.read_bytes() == complete
    assert list(read_reply_log(tmp_path / "absent.jsonl")) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b'{"qid": "q0", "wind\n', "reply log line is not valid JSON"),
        (b'["q0", 1]\n', "lacks 'qid' or 'window'"),
        (b'{"qid": "q0", "window": 1, "reply": "caf\xe9"}\n', "not valid UTF-8"),
    ],
    ids=["invalid-json", "not-a-record", "not-utf8"],
)
@pytest.mark.parametrize("where", ["middle", "last line, with its newline"])
def test_any_other_bad_line_names_file_and_line(tmp_path: Path, bad: bytes, message: str, where: str):
    log = tmp_path / "log.jsonl"
    write_log(log, 4)
    lines = log.read_bytes().splitlines(keepends=True)
    lines.insert(2 if where == "middle" else 4, bad)
    log.write_bytes(b"".join(lines))
    line = 3 if where == "middle" else 5
    with pytest.raises(InputError, match=message) as raised:
        list(read_reply_log(log, repair_tail=True))
    assert (raised.value.path, raised.value.line) == (str(log), line)
    assert log.read_bytes() == b"".join(lines)  # nothing cut


def test_non_utf8_bytes_are_named_by_byte_offset(tmp_path: Path):
    log = tmp_path / "log.jsonl"
    write_log(log, 5)
    data = log.read_bytes()
    offset = data.index(b"[2]", data.index(b'"window": 3'))  # inside line 4's reply
    log.write_bytes(data[:offset] + b"\xff" + data[offset + 1 :])
    with pytest.raises(InputError, match=rf"log.jsonl:4: not valid UTF-8 \(byte 0xff at byte offset {offset} of"):
        list(read_reply_log(log))


def test_the_log_is_read_one_line_at_a_time(tmp_path: Path):
    """A 10 MB log is read with far less memory than the log's size (the old reader held it whole)."""
    log = tmp_path / "log.jsonl"
    write_log(log, 20_000, reply="[1] > [2] " * 50)
    size = log.stat().st_size
    assert size > 10_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_reply_log(log))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000 and peak < size / 20, (peak, size)


# ------------------------------------------------------------------ through the CLI: resume and replay


def rerank(dl_store: Path, replies: Path, out: Path) -> list[str]:
    argv = ["rerank", *dl19_inputs(dl_store), "--backend", f"replay:{replies}", "--prompt", "rank_vicuna"]
    return [*argv, "--tag", "rankvicuna", "--out", str(out), "--max-queries", "2", "--no-progress"]


def corrupt_line_5(log: Path, kind: str) -> None:
    lines = log.read_bytes().splitlines(keepends=True)
    lines[4] = b"not json\n" if kind == "invalid JSON" else lines[4].replace(b'"reply"', b'"re\xffply"')
    log.write_bytes(b"".join(lines))


@pytest.mark.parametrize("kind", ["invalid JSON", "bytes not UTF-8"])
def test_resume_stops_at_a_corrupt_line_in_the_middle(
    dl_store: Path, rankvicuna_dl19_log: Path, tmp_path: Path, capsys, kind: str
):
    out = tmp_path / "t.run"
    assert main(rerank(dl_store, rankvicuna_dl19_log, out)) == 0
    log = tmp_path / "t.run.log.jsonl"
    corrupt_line_5(log, kind)
    out.unlink()
    assert main(rerank(dl_store, rankvicuna_dl19_log, out)) == 2
    assert f"distillm rerank: error: {log}:5: " in capsys.readouterr().err
    assert not out.exists()


def test_resume_repairs_a_partial_last_line(dl_store: Path, rankvicuna_dl19_log: Path, tmp_path: Path):
    whole, cut = tmp_path / "whole.run", tmp_path / "cut.run"
    assert main(rerank(dl_store, rankvicuna_dl19_log, whole)) == 0
    assert main(rerank(dl_store, rankvicuna_dl19_log, cut)) == 0
    log = tmp_path / "cut.run.log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]) + lines[-1][:30])  # the last window's write cut short
    cut.unlink()
    assert main(rerank(dl_store, rankvicuna_dl19_log, cut)) == 0
    assert cut.read_text() == whole.read_text()
    keys = [(r["qid"], r["window"]) for r in map(json.loads, log.read_bytes().splitlines())]
    assert len(keys) == len(set(keys)) == 2 * 9  # the cut window redone once, the rest resumed


@pytest.mark.parametrize("kind", ["invalid JSON", "bytes not UTF-8"])
def test_replay_stops_at_a_corrupt_line_in_the_middle(
    dl_store: Path, rankvicuna_dl19_log: Path, tmp_path: Path, capsys, kind: str
):
    replies = tmp_path / "replies.jsonl"
    replies.write_bytes(rankvicuna_dl19_log.read_bytes())
    corrupt_line_5(replies, kind)
    assert main(rerank(dl_store, replies, tmp_path / "t.run")) == 2
    assert f"distillm rerank: error: {replies}:5: " in capsys.readouterr().err
