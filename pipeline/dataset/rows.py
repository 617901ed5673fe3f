"""The dataset's rows built query by query: memory for one query, whatever the number of rows.

A 100k-query teacher run is 10M rows; `distillm export` builds them in passes over the two
runs (`pipeline.contract.run.iter_run`), each holding one query at a time:

1. `scan_teacher`: the teacher run's queries in order, their sizes and top hit's line, its tag;
2. `FirstStageIndex`: where each query's lines are in the first-stage run, and its tag;
3. `join_rows`: each query's teacher top `depth` (teacher rank = position in the teacher's
   ranking) with each doc's first-stage rank (its position in the first-stage ranking) and
   score, appended to an Arrow file (`ROWS_SCHEMA`, batches of `CHUNK_ROWS`), which the shard
   writer then reads memory-mapped, slice by slice.

Each pass checks every line as `read_trec_run` does; a run whose queries are not contiguous
raises `NotGrouped`, and export then reads both runs whole, as before, and joins them in memory
(`teacher_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.contract.dataset import (
    CHUNK_ROWS,
    DOC_ID,
    FIRST_STAGE_RANK,
    FIRST_STAGE_SCORE,
    QID,
    TEACHER_RANK,
)
from pipeline.contract.run import QueryRun, iter_run, ranking_positions, read_query
from pipeline.infra.errors import InputError

ROWS_SCHEMA = pa.schema(
    [
        pa.field(QID, pa.string(), nullable=False),
        pa.field(DOC_ID, pa.string(), nullable=False),
        pa.field(TEACHER_RANK, pa.int32(), nullable=False),
        pa.field(FIRST_STAGE_RANK, pa.int32(), nullable=False),
        pa.field(FIRST_STAGE_SCORE, pa.float64(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),  # the row's line in the teacher run (for errors)
    ]
)


def _first_tag(query: QueryRun) -> str:
    """The tag on the query's first line in the file."""
    return query.tags[query.lines.index(query.first_line)]


@dataclass
class TeacherScan:
    """What one pass over the teacher run tells: its queries in order, their sizes, the line of
    each query's best hit, and the tag of its first line."""

    qids: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    top_lines: list[int] = field(default_factory=list)
    tag: str = ""


def scan_teacher(path: Path) -> TeacherScan:
    scan = TeacherScan()
    for query in iter_run(path):
        if not scan.qids:
            scan.tag = _first_tag(query)
        scan.qids.append(query.qid)
        scan.sizes.append(len(query.doc_ids))
        scan.top_lines.append(query.lines[0])
    return scan


class FirstStageIndex:
    """Where each query's lines are in the first-stage run (one pass; ~100 bytes a query)."""

    def __init__(self, path: Path):
        self.path = path
        self.where: dict[str, tuple[int, int, int]] = {}
        self.tag = ""
        for query in iter_run(path):
            if not self.where:
                self.tag = _first_tag(query)
            self.where[query.qid] = (query.offset, query.end, query.first_line)

    def ranking(self, qid: str) -> dict[str, tuple[int, float]] | None:
        """doc -> (1-based position in the query's first-stage ranking, score); None: no such query."""
        where = self.where.get(qid)
        if where is None:
            return None
        query = read_query(self.path, *where)
        return {d: (p, s) for p, (d, s) in enumerate(zip(query.doc_ids, query.scores, strict=True), start=1)}


def join_rows(teacher_path: Path, first_stage: FirstStageIndex, depth: int, out: Path) -> int:
    """Write the rows (ROWS_SCHEMA) of every teacher query to the Arrow file `out`; returns their
    number. A teacher query or (query, doc) missing from the first stage raises InputError at
    the first such teacher line, queries first (counting them all), as `teacher_rows` does."""
    missing_queries: set[str] = set()
    first_missing_query: tuple[int, str] | None = None
    missing_pairs = 0
    first_missing_pair: tuple[int, str, str, int] | None = None
    columns: dict[str, list] = {name: [] for name in ROWS_SCHEMA.names}
    rows = 0
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_file(sink, ROWS_SCHEMA) as writer:
        for query in iter_run(teacher_path):
            kept = range(min(depth, len(query.doc_ids)))
            ranking = first_stage.ranking(query.qid)
            if ranking is None:
                missing_queries.add(query.qid)
                line = min(query.lines[i] for i in kept)
                if first_missing_query is None or line < first_missing_query[0]:
                    first_missing_query = (line, query.qid)
                continue
            for i in kept:
                doc_id, line = query.doc_ids[i], query.lines[i]
                found = ranking.get(doc_id)
                if found is None:
                    missing_pairs += 1
                    if first_missing_pair is None or line < first_missing_pair[0]:
                        first_missing_pair = (line, query.qid, doc_id, i + 1)
                    continue
                for name, value in zip(columns, (query.qid, doc_id, i + 1, *found, line), strict=True):
                    columns[name].append(value)
            if len(columns[QID]) >= CHUNK_ROWS:
                rows += _flush(writer, columns)
        rows += _flush(writer, columns)
    if first_missing_query is not None:
        line, qid = first_missing_query
        raise InputError(
            teacher_path,
            line,
            f"query {qid!r} is not in the first-stage run {first_stage.path} ({len(missing_queries)} queries missing)",
        )
    if first_missing_pair is not None:
        line, qid, doc_id, rank = first_missing_pair
        raise InputError(
            teacher_path,
            line,
            f"doc {doc_id!r} of query {qid!r} (teacher rank {rank}) is not in the first-stage run "
            f"{first_stage.path} ({missing_pairs} (qid, doc) pairs missing)",
        )
    return rows


def _flush(writer: pa.ipc.RecordBatchFileWriter, columns: dict[str, list]) -> int:
    n = len(columns[QID])
    if n:
        writer.write_batch(pa.record_batch([columns[f.name] for f in ROWS_SCHEMA], schema=ROWS_SCHEMA))
        for values in columns.values():
            values.clear()
    return n


def read_rows(path: Path) -> pa.Table:
    """The rows file, memory-mapped (slicing it reads only the slice)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def teacher_rows(
    teacher: pd.DataFrame, teacher_path: Path, first_stage: pd.DataFrame, first_stage_path: Path, depth: int
) -> pd.DataFrame:
    """The teacher's top `depth` per query with the first stage's rank and score of each doc."""
    order, position = ranking_positions(teacher)
    keep = order[position <= depth]
    rows = pd.DataFrame(
        {
            QID: teacher["qid"].to_numpy()[keep],
            DOC_ID: teacher["doc_id"].to_numpy()[keep],
            TEACHER_RANK: position[position <= depth].astype(np.int32),
            "line": teacher["line"].to_numpy()[keep],
        }
    )
    fs_order, fs_position = ranking_positions(first_stage)
    fs_rank = np.empty(len(first_stage), dtype=np.int32)
    fs_rank[fs_order] = fs_position
    # integer keys per (qid, doc_id): hashing two int columns is much faster than strings
    qcodes, _ = pd.factorize(np.concatenate([first_stage["qid"].to_numpy(), rows["qid"].to_numpy()]))
    dcodes, duniq = pd.factorize(np.concatenate([first_stage["doc_id"].to_numpy(), rows["doc_id"].to_numpy()]))
    keys = qcodes.astype(np.int64) * len(duniq) + dcodes
    n_fs = len(first_stage)
    found = pd.Index(keys[:n_fs]).get_indexer(keys[n_fs:])
    if (found < 0).any():
        missing_query = ~np.isin(qcodes[n_fs:], qcodes[:n_fs])
        bad = np.flatnonzero(missing_query if missing_query.any() else found < 0)
        first = rows.iloc[bad[np.argmin(rows["line"].to_numpy()[bad])]]
        what = (
            f"query {first['qid']!r} is not in the first-stage run {first_stage_path} "
            f"({len(set(rows['qid'].to_numpy()[bad]))} queries missing)"
            if missing_query.any()
            else f"doc {first['doc_id']!r} of query {first['qid']!r} (teacher rank {first['teacher_rank']}) is not "
            f"in the first-stage run {first_stage_path} ({len(bad)} (qid, doc) pairs missing)"
        )
        raise InputError(teacher_path, int(first["line"]), what)
    rows[FIRST_STAGE_RANK] = fs_rank[found]
    rows[FIRST_STAGE_SCORE] = first_stage["score"].to_numpy()[found]
    return rows
