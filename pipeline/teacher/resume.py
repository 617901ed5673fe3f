"""Which reply log a run continues, and how: resuming, or setting aside another run's log.

A log continues only under the settings it was started with (`settings_record`, kept beside it
in `LOG.settings.json`: `prepare_log`) and only for the same run: `resume` re-applies its
windows, which must be this run's windows in order with this run's doc ids, else it raises
`LogMismatch`. A log that does not continue the run is moved aside whole (`LOG.stale-<time>`,
never deleted, never mixed into the new log) and its replies answer the windows whose
prompts it already holds (`pipeline.teacher.reuse`).
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.contract.reply_log import load_record, read_settings, reply_log_records, settings_path, write_settings
from pipeline.teacher.prompts import PromptTemplate
from pipeline.teacher.settings import TeacherSettings
from pipeline.teacher.windows import Window, apply_permutation

log = logging.getLogger(__name__)


def settings_record(settings: TeacherSettings, template: PromptTemplate, tokenizer: str | None) -> dict[str, Any]:
    """The settings as written beside a reply log (`LOG.settings.json`) and in the stats' provenance.

    `ranking` appears only for FIRST runs: logs and stats written before it existed were all
    full generation, and their settings must read the same as a full-generation run's now
    (a log continues, and its replies are reused, only under equal settings).
    """
    record = {
        **asdict(settings),
        "prompt_file": str(template.path),
        "prompt_sha256": template.sha256,
        "tokenizer": tokenizer,
    }
    if settings.ranking == "full":
        del record["ranking"]
    return record


class LogMismatch(Exception):
    """An existing reply log does not continue this run (its windows are another run's)."""


@dataclass
class Resumed:
    """A query's progress in the log: `done` windows applied, giving the top `depth` in the
    order `order` (positions in the first-stage top `depth`; 2 bytes each: ~200 B a query)."""

    done: int
    order: array


def index_log(log_path: Path) -> dict[str, array]:
    """qid -> (line number, byte offset) of each of its records, in log order, flat in an array
    (16 bytes a window), cutting away a last line left partial by a crash."""
    index: dict[str, array] = {}
    for number, offset, record in reply_log_records(log_path, repair_tail=True):
        index.setdefault(record["qid"], array("q")).extend((number, offset))
    return index


def resume(
    lists: Iterable[tuple[str, list[str]]],
    windows_of: Callable[[int], list[Window]],
    depth: int,
    log_path: Path,
    count: Callable[[dict[str, Any]], None],
) -> dict[str, Resumed]:
    """Replay the logged windows of each query of `lists` (handing each record to `count`): the
    progress of every query the log has windows of. `windows_of(n)` are the sliding windows of a
    query with n candidates, of which the top `depth` are re-ranked. Raises LogMismatch, naming
    the first such line of the log, for a log of another run: a window out of order or with
    other doc ids.

    The log is read twice: once for where each query's records are, then each query's records
    as the query comes (memory: the index and the progress, not the records).
    """
    index = index_log(log_path)
    resumed: dict[str, Resumed] = {}
    mismatch: tuple[int, str] | None = None
    queries = complete = windows_resumed = 0
    with open(log_path, "rb") if index else nullcontext() as f:
        for qid, doc_ids in lists:
            queries += 1
            where = index.pop(qid, None)
            if where is None:
                continue
            top, windows, done = doc_ids[:depth], windows_of(len(doc_ids)), 0
            ranking = list(top)
            for number, offset in zip(where[::2], where[1::2], strict=True):
                f.seek(offset)
                record = load_record(f.readline())
                if record["window"] < done:
                    continue  # already applied (a window logged twice is harmless: same order)
                window = windows[done] if done < len(windows) else None
                problem = None
                if window is None or record["window"] != window.index:
                    problem = f"query {qid!r}: expected window {done}, found {record['window']}"
                elif record["doc_ids"] != ranking[window.start : window.end]:
                    problem = (
                        f"query {qid!r} window {window.index}: its doc ids differ from "
                        "this run's (another first stage, corpus or query set)"
                    )
                if problem is not None:
                    if mismatch is None or number < mismatch[0]:
                        mismatch = (number, f"{log_path}:{number}: {problem}")
                    break
                ranking = apply_permutation(ranking, window, [i - 1 for i in record["permutation"]])
                done += 1
                windows_resumed += 1
                count(record)
            if done:
                position = {d: i for i, d in enumerate(top)}
                kind = "H" if len(top) < 2**16 else "I"
                resumed[qid] = Resumed(done, array(kind, [position[d] for d in ranking]))
                complete += done == len(windows)
    if mismatch is not None:
        raise LogMismatch(mismatch[1])
    if windows_resumed:
        log.info("resumed %d windows from %s (%d of %d queries complete)", windows_resumed, log_path, complete, queries)
    if ignored := sum(len(where) // 2 for where in index.values()):
        log.warning("%s: %d logged windows belong to queries not in this run; ignored", log_path, ignored)
    return resumed


def move_log_aside(log_path: Path) -> Path:
    """Rename a reply log (and its settings file, copied when it stays valid) to `LOG.stale-<time>[-n]`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = log_path.with_name(f"{log_path.name}.stale-{stamp}")
    n = 1
    while moved.exists():
        n += 1
        moved = log_path.with_name(f"{log_path.name}.stale-{stamp}-{n}")
    log_path.rename(moved)
    if settings_path(log_path).exists():
        settings_path(moved).write_bytes(settings_path(log_path).read_bytes())
    return moved


def prepare_log(log_path: Path, record: dict[str, Any]) -> Path | None:
    """A log continues only under the settings it was started with (kept beside it, `LOG.settings.json`).

    A log written under other settings is moved aside (`LOG.stale-<time>`, never deleted) and
    its path returned: its replies are reused where prompt and generation settings match.
    """
    moved = None
    before = read_settings(log_path)
    if before is not None and log_path.exists():
        # `ranking` is written for FIRST runs only (settings_record): its absence is a setting too
        keys = [*record, *({"ranking"} & before.keys() - record.keys())]
        changed = {k: (before.get(k), record.get(k)) for k in keys if before.get(k) != record.get(k)}
        if changed:
            moved = move_log_aside(log_path)
            log.warning("settings changed %s: the old reply log is moved to %s", changed, moved)
    write_settings(log_path, record)
    return moved
