"""TREC run and qrels files: strict readers that name the offending line, and a writer."""

from __future__ import annotations

import math
import os
from array import array
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.infra.errors import InputError
from pipeline.io.lines import iter_lines
from pipeline.schemas import QRELS_COLUMNS, RUN_COLUMNS


def read_trec_run(path: str | Path, allow_empty: bool = False) -> pd.DataFrame:
    """Read `qid Q0 doc_id rank score tag` lines into a frame with RUN_COLUMNS.

    Rows keep file order. Raises InputError for a line without 6 fields, a rank that is not
    an integer, a score that is not a finite number, or a (qid, doc_id) pair seen before (both
    lines are named), at the first such line. Blank lines are skipped. A run without any
    ranking (an empty file) raises too, unless allow_empty (a teacher shard can hold no query).

    Memory: the frame (~100 bytes a line, query ids and tags shared); repeated hits are found
    by hashing the frame's columns, not with a set of every pair. A run too large for memory is
    read query by query instead (`pipeline.io.run_stream`).
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
            "qid": pd.Series(qids, dtype=object),
            "doc_id": pd.Series(doc_ids, dtype=object),
            "rank": np.frombuffer(ranks, dtype=np.int64) if ranks else np.zeros(0, dtype=np.int64),
            "score": np.frombuffer(scores, dtype=np.float64) if scores else np.zeros(0, dtype=np.float64),
            "tag": pd.Series(tags, dtype=object),
            "line": np.frombuffer(lines, dtype=np.int64) if lines else np.zeros(0, dtype=np.int64),
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
    pairs = pd.DataFrame({"qid": pd.Series(qids, dtype=object), "doc_id": pd.Series(doc_ids, dtype=object)})
    repeated = pairs.duplicated(keep="first").to_numpy()
    if not repeated.any():
        return
    i = int(np.argmax(repeated))  # rows are in file order: the first repeat is on the first such line
    first = int(np.argmax(((pairs["qid"] == qids[i]) & (pairs["doc_id"] == doc_ids[i])).to_numpy()))
    raise InputError(
        path, lines[i], f"duplicate hit: query {qids[i]!r} doc {doc_ids[i]!r} already on line {lines[first]}"
    )


def ranked_lists(run: pd.DataFrame) -> dict[str, list[str]]:
    """Each query's doc ids in ranking order: by rank, ties by score (high first) then file order.

    Queries appear in order of first appearance in the run.
    """
    order = run.assign(_pos=np.arange(len(run))).sort_values(
        ["rank", "score", "_pos"], ascending=[True, False, True], kind="stable"
    )
    lists: dict[str, list[str]] = {qid: [] for qid in pd.unique(run["qid"])}
    for qid, doc_id in zip(order["qid"], order["doc_id"], strict=True):
        lists[qid].append(doc_id)
    return lists


def run_frame(qids: list[str], doc_ids: list[str], ranks: list[int], scores: list[float], tag: str) -> pd.DataFrame:
    """A run frame (RUN_COLUMNS, dtypes as `read_trec_run` gives) from parallel columns; line -1 (not read from a file)."""
    return pd.DataFrame(
        {
            "qid": pd.Series(qids, dtype=object),
            "doc_id": pd.Series(doc_ids, dtype=object),
            "rank": np.asarray(ranks, dtype=np.int64),
            "score": np.asarray(scores, dtype=np.float64),
            "tag": pd.Series([tag] * len(qids), dtype=object),
            "line": np.full(len(qids), -1, dtype=np.int64),
        },
        columns=list(RUN_COLUMNS),
    )


def run_from_lists(lists: dict[str, list[str]], tag: str) -> pd.DataFrame:
    """A run frame from ranked doc-id lists: rank 1.., score n - rank + 1 (strictly decreasing)."""
    rows = [
        (qid, doc_id, rank, float(len(docs) - rank + 1), tag, -1)
        for qid, docs in lists.items()
        for rank, doc_id in enumerate(docs, start=1)
    ]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS)).astype({"rank": np.int64, "line": np.int64})


def write_trec_run(run: pd.DataFrame, path: str | Path) -> None:
    """Write a run frame as a TREC run, atomically (temp file + rename).

    Ids and tags must not contain whitespace: that would corrupt the file, so it raises.
    """
    for column in ("qid", "doc_id", "tag"):
        bad = run[column].astype(str).str.contains(r"\s", regex=True)
        if bad.any():
            raise ValueError(f"{column} contains whitespace: {run[column][bad].iloc[0]!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for qid, doc_id, rank, score, tag in zip(
            run["qid"], run["doc_id"], run["rank"], run["score"], run["tag"], strict=True
        ):
            f.write(f"{qid} Q0 {doc_id} {rank} {float(score)!r} {tag}\n")  # repr: exact round trip
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_qrels(path: str | Path) -> pd.DataFrame:
    """Read `qid iteration doc_id relevance` lines into a frame with QRELS_COLUMNS (an empty file raises)."""
    rows = []
    seen: dict[tuple[str, str], int] = {}
    for number, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise InputError(path, number, f"expected 4 fields 'qid iteration doc_id relevance', got {len(fields)}")
        qid, _, doc_id, rel = fields
        try:
            relevance = int(rel)
        except ValueError:
            raise InputError(path, number, f"relevance is not an integer: {rel!r}") from None
        first = seen.setdefault((qid, doc_id), number)
        if first != number:
            raise InputError(path, number, f"duplicate judgment: query {qid!r} doc {doc_id!r} already on line {first}")
        rows.append((qid, doc_id, relevance))
    if not rows:
        raise InputError(path, None, "the qrels hold no judgments (empty file)")
    return pd.DataFrame(rows, columns=list(QRELS_COLUMNS)).astype({"relevance": np.int64})


def write_qrels(qrels: pd.DataFrame, path: str | Path) -> None:
    """Write a qrels frame as `qid 0 doc_id relevance` lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for qid, doc_id, rel in zip(qrels["qid"], qrels["doc_id"], qrels["relevance"], strict=True):
            f.write(f"{qid} 0 {doc_id} {int(rel)}\n")
