"""The reply log (`OUT.log.jsonl`): one JSON line per completed window, appended as it completes.

It is the teacher's ground truth: the output run is re-derived from it, a crashed run
resumes from it, and `--backend replay:LOG` re-ranks from it without a model. A kill -9
can leave at most one partial last line, which `read_reply_log` drops and truncates away.
Ordering: records in the order windows complete; a query's windows in window order (a merged
log, `distillm merge-shards`: grouped by query, in run order). Beside the log, `LOG.settings.json`
holds the settings it was written under (`read_settings`, `write_settings`): a log continues,
and its replies are reused, only under the same.

Record fields: qid; window (processing order, 0 = bottom window); start_rank, end_rank
(1-based, inclusive, in the ranking as it was when the window was built); doc_ids (in
prompt order); prompt_sha256 (SHA-256 of the chat messages, JSON); reply (raw text, null
when no model was called); permutation (1-based identifiers, best first, after repair);
repairs; n_missing, n_repeated, n_out_of_range; words_per_passage; prompt_tokens,
completion_tokens; seconds (submit to completion). Optional: identifiers ("letters" when the
prompt named passages [A], [B], ...; absent for numbers); first_logprobs (FIRST windows:
identifier -> log-probability as the first generated token, from which the permutation is
derived; reply is then that one token); reused_from (the log a reused reply came from);
reasoning (a reasoning model's thoughts, when its server returned them apart from the reply;
thoughts written in the reply as `<think>...</think>` stay in `reply`); reasoning_tokens (the
part of completion_tokens spent on them); think_opened (the prompt itself ended inside an opened
`<think>`); context_retries (the prompts of this window a server refused as longer than its
model's context, each {words_per_passage, prompt_sha256, error}, before the one answered).
Records are made by `pipeline.teacher.replies.window_record`; `repairs` holds names of REPAIRS,
REASONING_CUT_OFF and PROMPT_OVERFLOW.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.contract.lines import decode_utf8
from pipeline.infra.crash_points import crash_point
from pipeline.infra.errors import InputError, naming_the_file

try:
    import orjson
except ImportError:  # pragma: no cover - it comes with the environment (vLLM's dependencies)
    orjson = None
_NOT_PARSED = object()

# a record's `repairs`: what was repaired in the reply (pipeline.teacher.replies), in this order
REPAIRS = ("wrong_format", "repetition", "missing", "out_of_range")
REASONING_CUT_OFF = "reasoning_cut_off"  # the reply ended inside its reasoning: no answer to read
PROMPT_OVERFLOW = "prompt_overflow"  # no prompt fitted: no model was asked, the order is kept


def reply_log_path(run_path: str | Path) -> Path:
    """Where a teacher run's reply log goes by default: RUN.log.jsonl beside RUN."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.name + ".log.jsonl")


def settings_path(log_path: str | Path) -> Path:
    """The settings file beside a reply log: LOG.settings.json."""
    log_path = Path(log_path)
    return log_path.with_name(log_path.name + ".settings.json")


def read_settings(log_path: str | Path) -> dict[str, Any] | None:
    """The settings a log was written under (None: no settings file beside it)."""
    sidecar = settings_path(log_path)
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(sidecar, None, f"not a valid settings JSON ({e})") from None


def write_settings(log_path: str | Path, settings: dict[str, Any]) -> None:
    """Write the settings file beside a reply log."""
    sidecar = settings_path(log_path)
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    with naming_the_file(sidecar):
        sidecar.write_text(json.dumps(settings, indent=2) + "\n")


def read_reply_log(path: str | Path, repair_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record), one line at a time (memory: one line, whatever the log's size).

    A last line without its newline is a crash artefact (a write cut short): it is skipped,
    and with repair_tail=True cut from the file once the lines before it have been read.
    Any other bad line raises InputError naming the file and line: invalid JSON, a record
    without 'qid' or 'window', or bytes that are not UTF-8 (with their byte offset in the file).
    """
    for number, _, record in reply_log_records(path, repair_tail):
        yield number, record


def reply_log_records(path: str | Path, repair_tail: bool = False) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """`read_reply_log` with each record's byte offset in the file: (line number, offset, record)."""
    path = Path(path)
    if not path.exists():
        return
    offset, partial_at = 0, None  # offset: where the current line starts in the file
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                partial_at = offset
                break
            if raw.strip():
                yield number, offset, _parse_line(path, number, raw, offset)
            offset += len(raw)
    if partial_at is not None and repair_tail:
        with open(path, "r+b") as f:
            f.truncate(partial_at)


def load_record(raw: bytes) -> Any:
    """One log line parsed as `json.loads` parses it: by orjson when it is installed (3x faster:
    resuming a 900k-window log parses it twice), by json for what orjson refuses (a bad line,
    which json then names; -Infinity among FIRST log-probabilities; integers past 64 bits)."""
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def _parse_line(path: Path, number: int, raw: bytes, offset: int) -> dict[str, Any]:
    record = _NOT_PARSED
    if orjson is not None:
        with contextlib.suppress(orjson.JSONDecodeError):  # json names what is wrong (or reads it)
            record = orjson.loads(raw)
    if record is _NOT_PARSED:
        record = _parse_slowly(path, number, raw, offset)
    if not isinstance(record, dict) or "qid" not in record or "window" not in record:
        raise InputError(path, number, "reply log line lacks 'qid' or 'window'")
    return record


def _parse_slowly(path: Path, number: int, raw: bytes, offset: int) -> Any:
    text = decode_utf8(path, number, raw, offset)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            path,
            number,
            f"reply log line is not valid JSON ({e.msg}, column {e.colno}); "
            "only a last line cut short by a crash is skipped",
        ) from None


class ReplyLogWriter:
    """Append-only writer.

    Every record reaches the operating system before `write` returns, so killing the
    process (even kill -9) loses nothing written. fsync, which guards against a crash of
    the machine itself, runs at most every `fsync_seconds` and at close: a machine crash
    can lose the last second of windows, which a resumed run then recomputes. Records are
    written unbuffered: a disk that fills up fails the one `write` (`OutOfSpace`, naming the
    log), leaving at most a partial last line, which resuming cuts away.
    """

    def __init__(self, path: str | Path, fsync_seconds: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.fsync_seconds = fsync_seconds
        self._synced = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        data = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        with naming_the_file(self.path):
            while data:
                data = data[os.write(self._fd, data) :]
            if time.monotonic() - self._synced >= self.fsync_seconds:
                os.fsync(self._fd)
                self._synced = time.monotonic()
        crash_point("reply-log")  # tests of resumption stop the run here (pipeline.infra.crash_points)

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with naming_the_file(self.path):
                os.fsync(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> ReplyLogWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.close()
            return
        with contextlib.suppress(OSError):  # the error under way is the one to report
            self.close()
