"""The reply log: one JSON line per completed window, appended as it completes.

It is the teacher's ground truth: the output run is re-derived from it, a crashed run
resumes from it, and `--backend replay:LOG` re-ranks from it without a model. A kill -9
can leave at most one partial last line, which `read_reply_log` drops and truncates away.

Record fields: qid; window (processing order, 0 = bottom window); start_rank, end_rank
(1-based, inclusive, in the ranking as it was when the window was built); doc_ids (in
prompt order); prompt_sha256 (SHA-256 of the chat messages, JSON); reply (raw text, null
when no model was called); permutation (1-based identifiers, best first, after repair);
repairs; n_missing, n_repeated, n_out_of_range; words_per_passage; prompt_tokens,
completion_tokens; seconds (submit to completion).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pipeline.errors import InputError


def read_reply_log(path: str | Path, repair_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record). A partial last line (no newline) is a crash artefact:
    it is skipped, and with repair_tail=True cut from the file. Any other bad line raises."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        data = f.read()
    complete = data.rfind(b"\n") + 1
    if complete < len(data) and repair_tail:
        with open(path, "r+b") as f:
            f.truncate(complete)
    for number, raw in enumerate(data[:complete].splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(path, number, f"reply log line is not valid JSON ({e})") from None
        if not isinstance(record, dict) or "qid" not in record or "window" not in record:
            raise InputError(path, number, "reply log line lacks 'qid' or 'window'")
        yield number, record


class ReplyLogWriter:
    """Append-only writer.

    Every record reaches the operating system before `write` returns, so killing the
    process (even kill -9) loses nothing written. fsync, which guards against a crash of
    the machine itself, runs at most every `fsync_seconds` and at close: a machine crash
    can lose the last second of windows, which a resumed run then recomputes.
    """

    def __init__(self, path: str | Path, fsync_seconds: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.fsync_seconds = fsync_seconds
        self._synced = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        if time.monotonic() - self._synced >= self.fsync_seconds:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> ReplyLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_rank_llm_windows(path: str | Path) -> list[dict[str, Any]]:
    """rank_llm's prompts-and-responses file: `{"prompt", "response"}` objects one after
    another (comma-separated, no enclosing list), in window processing order. A truncated
    last object ends the list. Turn it into a replay log to re-rank from rank_llm's replies."""
    text, decoder, pos, objects = Path(path).read_text(encoding="utf-8"), json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] in ",[]"):
            pos += 1
        if pos >= len(text):
            return objects
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return objects
        objects.append(obj)


def write_replay_log(windows: list[dict[str, Any]], qids: list[str], path: str | Path, per_query: int = 9) -> Path:
    """Write rank_llm's logged replies (`read_rank_llm_windows`, in processing order) as a
    reply log for `--backend replay:LOG`: window i belongs to qids[i // per_query]."""
    if len(windows) != per_query * len(qids):
        raise ValueError(f"{len(windows)} logged windows for {len(qids)} queries x {per_query}")
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for i, window in enumerate(windows):
            record = {
                "qid": qids[i // per_query],
                "window": i % per_query,
                "prompt_sha256": "",
                "reply": window["response"],
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
