"""Which reply log a run continues, and how: resuming, or setting aside another run's log.

A log continues only under the settings it was started with (kept beside it in
`LOG.settings.json`: `prepare_log`) and only for the same run: `resume` re-applies its
windows, which must be this run's windows in order with this run's doc ids, else it raises
`LogMismatch`. A log that does not continue the run is moved aside whole (`LOG.stale-<time>`,
never deleted, never mixed into the new log) and its replies answer the windows whose
prompts it already holds (`pipeline.teacher.reuse`).
"""

from __future__ import annotations

import json
import logging
import time
from array import array
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contract.reply_log import load_record, read_settings, reply_log_records
from pipeline.infra.errors import naming_the_file
from pipeline.teacher.query_state import QueryState
from pipeline.teacher.stats import Tally
from pipeline.teacher.windows import apply_permutation

log = logging.getLogger(__name__)


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
    new_state: Callable[[str, list[str]], QueryState],
    log_path: Path,
    tally: Tally,
    max_words: int,
) -> dict[str, Resumed]:
    """Replay the logged windows of each query of `lists` (counting them in `tally`): the
    progress of every query the log has windows of. Raises LogMismatch, naming the first such
    line of the log, for a log of another run: a window out of order or with other doc ids.

    The log is read twice: once for where each query's records are, then each query's records
    as the query comes (memory: the index and the progress, not the records).
    """
    index = index_log(log_path)
    resumed: dict[str, Resumed] = {}
    mismatch: tuple[int, str] | None = None
    queries = complete = 0
    with open(log_path, "rb") if index else nullcontext() as f:
        for qid, doc_ids in lists:
            queries += 1
            where = index.pop(qid, None)
            if where is None:
                continue
            state = new_state(qid, doc_ids)
            top = list(state.ranking)
            for number, offset in zip(where[::2], where[1::2], strict=True):
                f.seek(offset)
                record = load_record(f.readline())
                if record["window"] < state.done:
                    continue  # already applied (a window logged twice is harmless: same order)
                window = state.windows[state.done] if not state.finished else None
                problem = None
                if window is None or record["window"] != window.index:
                    problem = f"query {qid!r}: expected window {state.done}, found {record['window']}"
                elif record["doc_ids"] != state.ranking[window.start : window.end]:
                    problem = (
                        f"query {qid!r} window {window.index}: its doc ids differ from "
                        "this run's (another first stage, corpus or query set)"
                    )
                if problem is not None:
                    if mismatch is None or number < mismatch[0]:
                        mismatch = (number, f"{log_path}:{number}: {problem}")
                    break
                state.ranking = apply_permutation(state.ranking, window, [i - 1 for i in record["permutation"]])
                state.done += 1
                tally.add(record, max_words, resumed=True)
            if state.done:
                position = {d: i for i, d in enumerate(top)}
                kind = "H" if len(top) < 2**16 else "I"
                resumed[qid] = Resumed(state.done, array(kind, [position[d] for d in state.ranking]))
                complete += state.finished
    if mismatch is not None:
        raise LogMismatch(mismatch[1])
    if tally.resumed:
        log.info("resumed %d windows from %s (%d of %d queries complete)", tally.resumed, log_path, complete, queries)
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
    sidecar = log_path.with_name(log_path.name + ".settings.json")
    if sidecar.exists():
        moved.with_name(moved.name + ".settings.json").write_bytes(sidecar.read_bytes())
    return moved


def prepare_log(log_path: Path, record: dict[str, Any]) -> Path | None:
    """A log continues only under the settings it was started with (kept beside it, `LOG.settings.json`).

    A log written under other settings is moved aside (`LOG.stale-<time>`, never deleted) and
    its path returned: its replies are reused where prompt and generation settings match.
    """
    sidecar = log_path.with_name(log_path.name + ".settings.json")
    moved = None
    before = read_settings(log_path)
    if before is not None and log_path.exists():
        # `ranking` is written for FIRST runs only (pipeline.teacher.settings): its absence is a setting too
        keys = [*record, *({"ranking"} & before.keys() - record.keys())]
        changed = {k: (before.get(k), record.get(k)) for k in keys if before.get(k) != record.get(k)}
        if changed:
            moved = move_log_aside(log_path)
            log.warning("settings changed %s: the old reply log is moved to %s", changed, moved)
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    with naming_the_file(sidecar):
        sidecar.write_text(json.dumps(record, indent=2) + "\n")
    return moved
