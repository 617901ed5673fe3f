"""A TREC run one query at a time: memory for one query's hits, whatever the size of the run.

A 100k-query teacher run is 10M lines; read whole (`pipeline.io.trec.read_trec_run`) it takes
gigabytes of Python objects. `iter_run` reads a run whose queries are contiguous (each query's
lines together, as every retrieval tool writes them) and yields one `QueryRun` at a time, with
`read_trec_run`'s checks and messages (6 fields, integer rank, finite score, no (qid, doc_id)
twice), in file order. A query whose lines are not contiguous raises `NotGrouped`: callers then
fall back to reading the run whole, so such a run works as before, only not in bounded memory.
Each `QueryRun` says where its lines are (`offset`, `end`, `first_line`), so `read_query` can
read it again later without a pass over the file.

`RunWriter` writes rankings query by query, as `write_trec_run(run_from_lists(...))` does (rank
1.., score n - rank + 1), into a temporary file renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipeline.infra.errors import InputError, naming_the_file
from pipeline.io.lines import open_binary
from pipeline.io.trec import parse_run_line


@dataclass
class QueryRun:
    """One query's hits in ranking order (rank, then higher score, then file order)."""

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
            try:
                fields = raw.decode("utf-8").split()
            except UnicodeDecodeError as e:
                raise InputError(
                    path, number, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                ) from None
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
            raise InputError(path, number, f"duplicate hit: query {qid!r} doc {doc_id!r} already on line {first}")
        self.docs.append(doc_id)
        self.ranks.append(rank_value)
        self.scores.append(score_value)
        self.tags.append(self.shared.setdefault(tag, tag))
        self.lines.append(number)

    def done(self, end: int) -> QueryRun:
        """The query, its hits in ranking order: rank, then higher score, then file order."""
        ranks, scores = self.ranks, self.scores
        columns = [self.docs, ranks, scores, self.tags, self.lines]
        if any(a >= b for a, b in itertools.pairwise(ranks)):  # not written in rank order: sort
            order = sorted(range(len(ranks)), key=lambda i: (ranks[i], -scores[i], i))
            columns = [[column[i] for i in order] for column in columns]
        return QueryRun(self.qid, *columns, self.first_line, self.offset, end)


class RunWriter:
    """Writes a TREC run query by query (rank 1.., score n - rank + 1, as `run_from_lists`); the
    file appears, complete, when the writer closes without an error (temp file, fsync, rename)."""

    def __init__(self, path: str | Path, tag: str):
        if any(c.isspace() for c in tag):
            raise ValueError(f"tag contains whitespace: {tag!r}")
        self.path, self.tag = Path(path), tag
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._ends: dict[int, list[str]] = {}
        self._file: IO[str] = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in __exit__

    def write(self, qid: str, doc_ids: list[str]) -> None:
        """One query's ranking, best first."""
        n = len(doc_ids)
        if len(qid.split()) != 1 or qid.split()[0] != qid:
            raise ValueError(f"qid contains whitespace: {qid!r}")
        if len(" ".join(doc_ids).split()) != n:  # an id with whitespace (or an empty one) would corrupt the file
            bad = next(d for d in doc_ids if len(d.split()) != 1 or d.split()[0] != d)
            raise ValueError(f"doc_id contains whitespace: {bad!r}")
        if n not in self._ends:  # " rank score tag\n" of each rank, for lists of n
            self._ends[n] = [f" {r} {float(n - r + 1)!r} {self.tag}\n" for r in range(1, n + 1)]
        head = qid + " Q0 "
        with naming_the_file(self._tmp):
            self._file.write("".join([head + d + end for d, end in zip(doc_ids, self._ends[n], strict=True)]))

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
