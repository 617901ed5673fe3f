"""TREC runs: `qid Q0 doc_id rank score tag`, whitespace-separated, one line per hit.

The ordering rule, written once (`ranking_order`): a query's ranking is by rank, then higher
score, then file order; queries come in the order they first appear in the file. Writers emit
ranks 1.. and scores that strictly decrease with rank. A run's stats go beside it
(`stats_path`: RUN.stats.json).

Reading is strict and names the offending line: a line without 6 fields, a rank that is not an
integer, a score that is not a finite number, a (qid, doc_id) pair seen before (both lines
named), bytes that are not UTF-8. Two readers apply these checks with the same messages:

    read_trec_run(path)   the whole run as a frame with RUN_COLUMNS (~100 bytes a line)
    iter_run(path)        one `QueryRun` at a time (memory: one query) of a run whose queries are
                          contiguous (as every retrieval tool writes them); a query that comes
                          back after another raises `NotGrouped`: callers then read it whole

One writer, `RunWriter`, writes query by query (or frame rows as they are: `write_trec_run`)
into a temporary file renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from pipeline.contract.lines import decode_utf8, iter_lines, open_binary
from pipeline.infra.errors import InputError, naming_the_file

QID, DOC_ID, RANK, SCORE, TAG, LINE = "qid", "doc_id", "rank", "score", "tag", "line"
# `line` is the 1-based line of the hit in the file it was read from (-1 when made in
# memory); it lets every later check name the offending line.
RUN_COLUMNS = (QID, DOC_ID, RANK, SCORE, TAG, LINE)
_WRITE_ROWS = 65_536  # lines formatted at a time by `RunWriter.write_rows`


def stats_path(run_path: str | Path) -> Path:
    """Where the stats of a run go: RUN.stats.json beside RUN."""
    run_path = Path(run_path)
    return run_path.with_name(run_path.name + ".stats.json")


# --- the ordering rule ------------------------------------------------------------------------


def ranking_order(ranks: Sequence[int], scores: Sequence[float], queries: Sequence[int] | None = None) -> np.ndarray:
    """Positions of hits in ranking order: by query (`queries`: codes numbering the queries in
    their order of first appearance; None: one query), then rank, then higher score, then file order."""
    keys = [np.arange(len(ranks)), -np.asarray(scores, dtype=np.float64), np.asarray(ranks, dtype=np.int64)]
    return np.lexsort(keys if queries is None else [*keys, np.asarray(queries)])


def query_positions(sorted_queries: np.ndarray) -> np.ndarray:
    """1-based position of each hit within its query, for hits sorted by query (codes)."""
    starts = np.flatnonzero(np.r_[True, sorted_queries[1:] != sorted_queries[:-1]])
    return np.arange(len(sorted_queries)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_queries)])) + 1


def ranking_positions(run: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a run in ranking order: (row order, 1-based position of each in its query's ranking)."""
    codes = pd.factorize(run[QID], sort=False)[0]
    order = ranking_order(run[RANK].to_numpy(), run[SCORE].to_numpy(), codes)
    return order, query_positions(codes[order])


def ranked_lists(run: pd.DataFrame) -> dict[str, list[str]]:
    """Each query's doc ids in ranking order; queries in order of first appearance in the run."""
    order, _ = ranking_positions(run)
    lists: dict[str, list[str]] = {qid: [] for qid in pd.unique(run[QID])}
    for qid, doc_id in zip(run[QID].to_numpy()[order], run[DOC_ID].to_numpy()[order], strict=True):
        lists[qid].append(doc_id)
    return lists


# --- reading a run whole ----------------------------------------------------------------------


def read_trec_run(path: str | Path, allow_empty: bool = False) -> pd.DataFrame:
    """Read `qid Q0 doc_id rank score tag` lines into a frame with RUN_COLUMNS.

    Rows keep file order. Raises InputError at the first bad line (see the module docstring);
    blank lines are skipped. A run without any ranking (an empty file) raises too, unless
    allow_empty (a teacher shard can hold no query).

    Memory: the frame (~100 bytes a line, query ids and tags shared); repeated hits are found
    by hashing the frame's columns, not with a set of every pair. A run too large for memory is
    read query by query instead (`iter_run`).
    """
    qids, doc_ids, tags = [], [], []
    ranks, scores, lines = array("q"), array("d"), array("q")
    shared: dict[str, str] = {}  # one str object per distinct query id and tag
    for number, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        try:
            qid, doc_id, rank_value, score_value, tag = parse_run_line(path, number, fields, line)
        except InputError:
            _raise_repeated_hit(path, qids, doc_ids, lines)  # a repeated hit on an earlier line comes first
            raise
        qids.append(shared.setdefault(qid, qid))
        doc_ids.append(doc_id)
        ranks.append(rank_value)
        scores.append(score_value)
        tags.append(shared.setdefault(tag, tag))
        lines.append(number)
    if not qids and not allow_empty:
        raise InputError(path, None, "the run holds no rankings (empty file)")
    _raise_repeated_hit(path, qids, doc_ids, lines)
    return pd.DataFrame(
        {
            QID: pd.Series(qids, dtype=object),
            DOC_ID: pd.Series(doc_ids, dtype=object),
            RANK: np.frombuffer(ranks, dtype=np.int64) if ranks else np.zeros(0, dtype=np.int64),
            SCORE: np.frombuffer(scores, dtype=np.float64) if scores else np.zeros(0, dtype=np.float64),
            TAG: pd.Series(tags, dtype=object),
            LINE: np.frombuffer(lines, dtype=np.int64) if lines else np.zeros(0, dtype=np.int64),
        },
        columns=list(RUN_COLUMNS),
    )


def parse_run_line(path: str | Path, number: int, fields: list[str], line: str) -> tuple[str, str, int, float, str]:
    """(qid, doc_id, rank, score, tag) of one split run line, or an error naming file and line."""
    if len(fields) != 6:
        raise InputError(
            path, number, f"expected 6 fields 'qid Q0 doc_id rank score tag', got {len(fields)}: {line[:120]!r}"
        )
    qid, _, doc_id, rank, score, tag = fields
    try:
        rank_value = int(rank)
    except ValueError:
        raise InputError(path, number, f"rank is not an integer: {rank!r}") from None
    try:
        score_value = float(score)
    except ValueError:
        raise InputError(path, number, f"score is not a number: {score!r}") from None
    if not math.isfinite(score_value):
        raise InputError(path, number, f"score is not finite: {score!r}")
    return qid, doc_id, rank_value, score_value, tag


def _raise_repeated_hit(path: str | Path, qids: list[str], doc_ids: list[str], lines: array) -> None:
    """InputError at the first line whose (qid, doc_id) was on an earlier line, if any."""
    if not qids:
        return
    pairs = pd.DataFrame({QID: pd.Series(qids, dtype=object), DOC_ID: pd.Series(doc_ids, dtype=object)})
    repeated = pairs.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return
    i = int(np.argmax(repeated))  # rows are in file order: the first repeat is on the first such line
    first = int(np.argmax(((pairs[QID] == qids[i]) & (pairs[DOC_ID] == doc_ids[i])).to_numpy()))
    raise _repeated_hit(path, lines[i], qids[i], doc_ids[i], lines[first])


def _repeated_hit(path: str | Path, line: int, qid: str, doc_id: str, first: int) -> InputError:
    return InputError(path, line, f"duplicate hit: query {qid!r} doc {doc_id!r} already on line {first}")


# --- run frames made in memory ----------------------------------------------------------------


def run_frame(qids: list[str], doc_ids: list[str], ranks: list[int], scores: list[float], tag: str) -> pd.DataFrame:
    """A run frame (RUN_COLUMNS, dtypes as `read_trec_run` gives) from parallel columns; line -1 (not read from a file)."""
    return pd.DataFrame(
        {
            QID: pd.Series(qids, dtype=object),
            DOC_ID: pd.Series(doc_ids, dtype=object),
            RANK: np.asarray(ranks, dtype=np.int64),
            SCORE: np.asarray(scores, dtype=np.float64),
            TAG: pd.Series([tag] * len(qids), dtype=object),
            LINE: np.full(len(qids), -1, dtype=np.int64),
        },
        columns=list(RUN_COLUMNS),
    )


def strictly_decreasing(scores: list[float]) -> int:
    """Separate equal neighbours of a ranking's scores by one float64 step, in place, so that
    they strictly decrease (as the contract asks of writers); returns how many scores moved."""
    moved = 0
    for i in range(1, len(scores)):
        if scores[i] >= scores[i - 1]:
            scores[i] = math.nextafter(scores[i - 1], -math.inf)
            moved += 1
    return moved


def list_scores(n: int) -> list[float]:
    """The scores a ranked list of n is written with: n - rank + 1, strictly decreasing."""
    return [float(n - rank + 1) for rank in range(1, n + 1)]


def run_from_lists(lists: dict[str, list[str]], tag: str) -> pd.DataFrame:
    """A run frame from ranked doc-id lists: rank 1.., score n - rank + 1 (`list_scores`)."""
    qids = [qid for qid, docs in lists.items() for _ in docs]
    doc_ids = [doc_id for docs in lists.values() for doc_id in docs]
    ranks = [rank for docs in lists.values() for rank in range(1, len(docs) + 1)]
    return run_frame(qids, doc_ids, ranks, [s for docs in lists.values() for s in list_scores(len(docs))], tag)


# --- reading a run query by query -------------------------------------------------------------


@dataclass
class QueryRun:
    """One query's hits in ranking order (`ranking_order`)."""

    qid: str
    doc_ids: list[str]
    ranks: list[int]
    scores: list[float]
    tags: list[str]
    lines: list[int]  # 1-based line of each hit in the file
    first_line: int  # where the query's lines start: line number and byte offset; `end`: byte after them
    offset: int
    end: int


class NotGrouped(Exception):
    """A query's lines are not contiguous in the run (it comes back after another query)."""

    def __init__(self, path: Path, qid: str, first_line: int, line: int):
        self.path, self.qid, self.first_line, self.line = path, qid, first_line, line
        super().__init__(f"{path}:{line}: query {qid!r} (first on line {first_line}) comes back after other queries")


def iter_run(path: str | Path, allow_empty: bool = False) -> Iterator[QueryRun]:
    """Yield each query of a run whose queries are contiguous, in file order (see module docstring).

    Raises InputError at the first bad line (as `read_trec_run`), NotGrouped when a query
    comes back after another one, and InputError for a run without any ranking unless allow_empty.
    """
    path = Path(path)
    started: dict[str, int] = {}  # qid -> first line, to notice a query coming back
    block = _Block("", 0, 0)
    offset = 0
    with open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            fields = decode_utf8(path, number, raw).split()
            if fields:
                if fields[0] != block.qid:
                    if block.docs:
                        yield block.done(offset)
                    if fields[0] in started:
                        raise NotGrouped(path, fields[0], started[fields[0]], number)
                    started[fields[0]] = number
                    block = _Block(fields[0], number, offset)
                block.add(path, number, fields, raw)
            offset += len(raw)
    if block.docs:
        yield block.done(offset)
    elif not allow_empty:
        raise InputError(path, None, "the run holds no rankings (empty file)")


def read_query(path: str | Path, offset: int, end: int, first_line: int) -> QueryRun:
    """The query whose lines `iter_run` found at bytes [offset, end) from line first_line."""
    path = Path(path)
    with open_binary(path) as f:
        f.seek(offset)
        data = f.read(end - offset)
    block = _Block("", first_line, offset)
    for number, raw in enumerate(data.splitlines(keepends=True), start=first_line):
        fields = raw.decode("utf-8").split()  # iter_run checked these lines
        if fields:
            block.qid = fields[0]
            block.add(path, number, fields, raw)
    return block.done(end)


class _Block:
    """The lines of one query as they are read: checked (read_trec_run's checks and messages)."""

    def __init__(self, qid: str, first_line: int, offset: int):
        self.qid, self.first_line, self.offset = qid, first_line, offset
        self.docs: list[str] = []
        self.ranks: list[int] = []
        self.scores: list[float] = []
        self.tags: list[str] = []
        self.lines: list[int] = []
        self.seen: dict[str, int] = {}
        self.shared: dict[str, str] = {}  # one str per distinct tag

    def add(self, path: Path, number: int, fields: list[str], raw: bytes) -> None:
        text = raw.decode("utf-8").rstrip("\r\n") if len(fields) != 6 else ""  # quoted only in the error
        qid, doc_id, rank_value, score_value, tag = parse_run_line(path, number, fields, text)
        first = self.seen.setdefault(doc_id, number)
        if first != number:
            raise _repeated_hit(path, number, qid, doc_id, first)
        self.docs.append(doc_id)
        self.ranks.append(rank_value)
        self.scores.append(score_value)
        self.tags.append(self.shared.setdefault(tag, tag))
        self.lines.append(number)

    def done(self, end: int) -> QueryRun:
        """The query, its hits in ranking order."""
        columns = [self.docs, self.ranks, self.scores, self.tags, self.lines]
        if any(a >= b for a, b in itertools.pairwise(self.ranks)):  # not written in rank order: sort
            order = ranking_order(self.ranks, self.scores).tolist()
            columns = [[column[i] for i in order] for column in columns]
        return QueryRun(self.qid, *columns, self.first_line, self.offset, end)


# --- writing ----------------------------------------------------------------------------------


class RunWriter:
    """Writes a TREC run, query by query (`write`) or as rows (`write_rows`); the file appears,
    complete, when the writer closes without an error (temp file, fsync, rename)."""

    def __init__(self, path: str | Path, tag: str | None = None):
        if tag is not None and any(c.isspace() for c in tag):
            raise ValueError(f"tag contains whitespace: {tag!r}")
        self.path, self.tag = Path(path), tag
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._ends: dict[int, list[str]] = {}
        self._file: IO[str] = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__

    def write(self, qid: str, doc_ids: list[str], scores: Sequence[float] | None = None) -> None:
        """One query's ranking, best first: rank 1.., score `scores` (strictly decreasing) or
        n - rank + 1 (`list_scores`), tag the writer's."""
        n = len(doc_ids)
        if len(qid.split()) != 1 or qid.split()[0] != qid:
            raise ValueError(f"qid contains whitespace: {qid!r}")
        if len(" ".join(doc_ids).split()) != n:  # an id with whitespace (or an empty one) would corrupt the file
            bad = next(d for d in doc_ids if len(d.split()) != 1 or d.split()[0] != d)
            raise ValueError(f"doc_id contains whitespace: {bad!r}")
        if scores is not None:
            ends = [f" {r} {float(s)!r} {self.tag}\n" for r, s in enumerate(scores, start=1)]
        else:
            if n not in self._ends:  # " rank score tag\n" of each rank, for lists of n
                self._ends[n] = [f" {r} {s!r} {self.tag}\n" for r, s in enumerate(list_scores(n), start=1)]
            ends = self._ends[n]
        head = qid + " Q0 "
        with naming_the_file(self._tmp):
            self._file.write("".join([head + d + end for d, end in zip(doc_ids, ends, strict=True)]))

    def write_rows(
        self,
        qids: Iterable[str],
        doc_ids: Iterable[str],
        ranks: Iterable[int],
        scores: Iterable[float],
        tags: Iterable[str] | None = None,
    ) -> None:
        """Hits as they are, one line each, in the order given (tags: the writer's tag if None)."""
        if tags is None:
            rows = ((q, d, r, s, self.tag) for q, d, r, s in zip(qids, doc_ids, ranks, scores, strict=True))
        else:
            rows = zip(qids, doc_ids, ranks, scores, tags, strict=True)
        while chunk := list(itertools.islice(rows, _WRITE_ROWS)):
            text = "".join(f"{q} Q0 {d} {r} {float(s)!r} {t}\n" for q, d, r, s, t in chunk)
            with naming_the_file(self._tmp):
                self._file.write(text)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:
            with contextlib.suppress(OSError):  # flushing the rest may fail too (a full disk): the first error counts
                self._file.close()
            self._tmp.unlink(missing_ok=True)
            return
        try:
            with naming_the_file(self._tmp):
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
        except OSError:
            with contextlib.suppress(OSError):
                self._file.close()
            self._tmp.unlink(missing_ok=True)
            raise
        os.replace(self._tmp, self.path)


def write_trec_run(run: pd.DataFrame, path: str | Path) -> None:
    """Write a run frame as a TREC run, row by row in frame order, atomically (`RunWriter`).

    Ids and tags must not contain whitespace: that would corrupt the file, so it raises.
    """
    for column in (QID, DOC_ID, TAG):
        bad = run[column].astype(str).str.contains(r"\s", regex=True)
        if bad.any():
            raise ValueError(f"{column} contains whitespace: {run[column][bad].iloc[0]!r}")
    with RunWriter(path) as writer:
        writer.write_rows(run[QID], run[DOC_ID], run[RANK], run[SCORE], run[TAG])
