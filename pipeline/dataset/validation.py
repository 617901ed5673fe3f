"""Validation (`distillm validate DIR`): is an exported dataset what its metadata and card say it is?

Checks, each reported as (qid, doc_id, what is wrong):
- every shard has exactly the dataset schema, and the metadata of metadata.json;
- every query's teacher ranks are a full permutation: exactly 1..n, none missing or
  repeated, n <= depth; no doc id twice in a query; first_stage_rank unique per query;
- teacher_score = depth - teacher_rank + 1; no nulls;
- each query's rows are contiguous, ordered by teacher_rank, and in one shard;
- the numbers of queries and rows (in all, and per shard) match metadata.json and the
  card, and the teacher run file (when there is one) has one line per row;
- the lightning-ir Parquet run has exactly its columns and the data's (qid, doc_id, teacher_rank).

`validate_dataset` returns a summary and the problems (`distillm validate` exits 0 with the
summary, or 2 with the offending rows: `pipeline.commands.validate`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.contract.dataset import (
    CHUNK_ROWS,
    DOC_ID,
    FIRST_STAGE_RANK,
    METADATA_KEY,
    QID,
    TEACHER_RANK,
    TEACHER_SCORE,
    dataset_schema,
    iter_batches,
    teacher_score,
)
from pipeline.contract.run import query_positions
from pipeline.infra.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

_COLUMNS = [QID, DOC_ID, FIRST_STAGE_RANK, TEACHER_RANK, TEACHER_SCORE]


@dataclass(frozen=True)
class Problem:
    qid: str
    doc_id: str
    message: str


def validate_dataset(path: str | Path) -> tuple[dict[str, Any], list[Problem]]:
    """(summary, problems) for a dataset directory; InputError if it is not one at all."""
    import pyarrow.parquet as pq

    from pipeline.dataset.dataset_card import card_counts

    path = Path(path)
    meta_path = path / "metadata.json"
    if not meta_path.exists():
        raise InputError(meta_path, None, "not found: not a dataset directory (distillm export)")
    metadata = json.loads(meta_path.read_text())
    problems: list[Problem] = []
    files = sorted(str(p.relative_to(path)) for p in (path / "data").glob("*.parquet"))
    listed = [s["file"] for s in metadata.get("shards", [])]
    if files != listed:
        problems.append(Problem("-", "-", f"shards on disk {files} differ from metadata.json's {listed}"))
    expected = dataset_schema(bool(metadata.get("with_text")))
    readable = []  # the shards with the dataset's schema
    for name in files:
        schema = pq.read_schema(path / name)
        if [(f.name, f.type) for f in schema] != [(f.name, f.type) for f in expected]:
            got = ", ".join(f"{f.name}:{f.type}" for f in schema)
            problems.append(Problem("-", "-", f"{name}: schema is ({got}), expected ({expected.to_string()})"))
            continue
        embedded = json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}"))
        if embedded != metadata:
            problems.append(Problem("-", "-", f"{name}: Parquet metadata differs from metadata.json"))
        rows = pq.ParquetFile(path / name).metadata.num_rows
        shard_rows = next((s["rows"] for s in metadata.get("shards", []) if s["file"] == name), None)
        if shard_rows != rows:
            problems.append(Problem("-", "-", f"{name}: {rows} rows, metadata.json says {shard_rows}"))
        readable.append(path / name)
    # One pass over the rows, a batch at a time: counts, nulls, and whether every row check
    # passes. Only a dataset with row problems is read whole, to name them (check_rows).
    scan = RowScan(int(metadata["depth"]) if isinstance(metadata.get("depth"), int) else 0)
    for index, batch in iter_batches(readable, _COLUMNS):
        scan.add(batch, index)
    n_rows = scan.rows
    problems += [Problem("-", "-", f"column {c}: {n} nulls") for c, n in scan.nulls.items() if n]
    whole = len(readable) == len(files) and n_rows > 0  # every row readable as the schema says
    if whole and not any(scan.nulls.values()) and not scan.finish():
        frame, shard_of_row = _read_whole(readable)
        problems += check_rows(frame, shard_of_row, int(metadata["depth"]))

    counts = {"queries": scan.queries, "rows": n_rows, "shards": len(files)}
    card = path / "README.md"
    stated = {"metadata.json": {k: metadata.get(k) for k in ("queries", "rows")}}
    stated["metadata.json"]["shards"] = len(listed)
    if card.exists():
        on_card = card_counts(card)
        stated["README.md"] = {k: on_card.get(k) for k in counts}
        stated["README.md (dataset_info)"] = {"rows": on_card.get("num_examples")}
    else:
        problems.append(Problem("-", "-", "README.md (the dataset card) is missing"))
    for source, values in stated.items():
        for key, value in values.items():
            if value != counts[key]:
                problems.append(Problem("-", "-", f"{key}: the data has {counts[key]}, {source} says {value}"))
    problems += _lightning_ir_problems(path, metadata, readable if whole else None)
    run_file = path / str(metadata.get("teacher_run_file"))
    if metadata.get("teacher_run_file") is None:
        pass  # no ir_datasets id was known at export: no TREC run for lightning-ir
    elif not run_file.is_file():
        problems.append(Problem("-", "-", f"teacher run {run_file.name} is missing"))
    else:
        with open(run_file, "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if lines != n_rows:
            problems.append(Problem("-", "-", f"teacher run {run_file.name} has {lines} lines, the data {n_rows} rows"))
    summary = {**counts, "depth": metadata.get("depth"), "with_text": bool(metadata.get("with_text"))}
    return summary, problems


def _lightning_ir_problems(path: Path, metadata: dict[str, Any], shards: list[Path] | None) -> list[Problem]:
    from pipeline.dataset.lightning_ir import COLUMNS, problems

    name = metadata.get("lightning_ir_file")
    if not name:  # exported by a version before the lightning-ir files: nothing to check
        return []
    if not (path / name).is_file():
        return [Problem("-", "-", f"lightning-ir run {name} is missing")]
    if shards is None:  # the shards could not be read: nothing to compare with
        return []
    import pyarrow.parquet as pq

    names = pq.read_schema(path / name).names
    as_written = "." not in name.removesuffix(".parquet") and names[: len(COLUMNS)] == list(COLUMNS)
    if as_written and set(names[len(COLUMNS) :]) <= {"text"} and _same_rows_in_order(path / name, shards):
        return []  # what export writes; anything else is compared as lightning-ir reads it (any order)
    frame = _read_whole(shards)[0][[QID, DOC_ID, TEACHER_RANK]]
    return [Problem("-", "-", message) for message in problems(path / name, frame)]


def _same_rows_in_order(run: Path, shards: list[Path]) -> bool:
    """The lightning-ir run holds the data's (qid, doc_id, teacher_rank) in the data's order
    (compared a batch at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    theirs = pq.ParquetFile(run)
    if theirs.metadata.num_rows != sum(pq.ParquetFile(s).metadata.num_rows for s in shards):
        return False
    ours = (batch for _, batch in iter_batches(shards, [QID, DOC_ID, TEACHER_RANK]))
    pending: list[pa.RecordBatch] = []
    for batch in theirs.iter_batches(CHUNK_ROWS, columns=["query_id", "doc_id", "rank"]):  # lightning-ir's names
        while sum(b.num_rows for b in pending) < batch.num_rows:
            pending.append(next(ours))
        mine = pa.Table.from_batches(pending).combine_chunks()
        head = mine.slice(0, batch.num_rows)
        if not all(head.column(i).equals(pa.chunked_array([batch.column(i)])) for i in range(3)):
            return False
        pending = mine.slice(batch.num_rows).to_batches()
    return True


def _read_whole(shards: list[Path]) -> tuple[pd.DataFrame, np.ndarray]:
    """All rows of the shards (_COLUMNS) as one frame, and each row's shard."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(s, columns=_COLUMNS) for s in shards]
    shard_of_row = np.concatenate([np.full(t.num_rows, i, dtype=np.int32) for i, t in enumerate(tables)])
    return pd.concat([t.to_pandas() for t in tables], ignore_index=True), shard_of_row


class RowScan:
    """One pass over the rows, batch by batch: their number, nulls per column, the distinct
    queries, and whether `check_rows` would find nothing (`finish()`). Memory: a batch and the
    ids of the queries seen."""

    def __init__(self, depth: int):
        self.depth = depth
        self.rows = 0
        self.nulls = dict.fromkeys(_COLUMNS, 0)
        self.seen: set[str] = set()  # queries whose rows have started
        self.clean = True  # no row problem found so far
        self.qid: str | None = None  # the query whose rows the last batch ended in, and what they held
        self.shard, self.position = -1, 0
        self.docs: set[str] = set()
        self.first_stage_ranks: set[int] = set()

    @property
    def queries(self) -> int:
        return len(self.seen - {None})

    def add(self, batch: pa.RecordBatch, shard: int) -> None:
        self.rows += batch.num_rows
        for name in _COLUMNS:
            self.nulls[name] += batch.column(name).null_count
        qids = batch.column(QID).to_pylist()
        if any(self.nulls.values()):
            self.clean = False  # check_rows does not run; only the distinct queries still count
            self.seen.update(qids)
            return
        docs, first_stage = batch.column(DOC_ID).to_pylist(), batch.column(FIRST_STAGE_RANK).to_pylist()
        rank = batch.column(TEACHER_RANK).to_numpy().astype(np.int64)
        if self.depth < 1 or (batch.column(TEACHER_SCORE).to_numpy() != teacher_score(self.depth, rank)).any():
            self.clean = False
        column = np.asarray(qids, dtype=object)
        starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]]).tolist()
        for start, end in zip(starts, [*starts[1:], len(qids)], strict=True):
            qid = qids[start]
            if qid != self.qid or start > 0:  # a query's rows start
                if qid in self.seen:
                    self.clean = False  # rows not contiguous (or split across shards)
                self.seen.add(qid)
                self.qid, self.shard, self.position = qid, shard, 0
                self.docs, self.first_stage_ranks = set(), set()
            elif shard != self.shard:
                self.clean = False  # continued in the next shard: split across shards
            n = end - start
            if (rank[start:end] != np.arange(self.position + 1, self.position + n + 1)).any():
                self.clean = False  # not exactly 1..n in order
            self.position += n
            self.docs.update(docs[start:end])
            self.first_stage_ranks.update(first_stage[start:end])
            if len(self.docs) != self.position or len(self.first_stage_ranks) != self.position:
                self.clean = False  # a doc or first-stage rank twice in the query
            if self.position > self.depth:
                self.clean = False

    def finish(self) -> bool:
        """True when no row check can fail."""
        return self.clean


def check_rows(frame: pd.DataFrame, shard: np.ndarray, depth: int) -> list[Problem]:
    """Row-level checks (vectorised; only queries found bad are looked at one by one)."""
    problems: list[Problem] = []
    qid, doc = frame[QID].to_numpy(), frame[DOC_ID].to_numpy()
    rank = frame[TEACHER_RANK].to_numpy().astype(np.int64)
    codes, uniques = pd.factorize(frame[QID], sort=False)
    same = codes[1:] == codes[:-1]
    blocks = codes[np.r_[True, ~same]]
    for c in np.unique(blocks[pd.Series(blocks).duplicated().to_numpy()]):
        problems.append(Problem(str(uniques[c]), "-", "rows of this query are not contiguous"))
    split = pd.Series(shard).groupby(codes).nunique()
    for c in split.index[split.to_numpy() > 1]:
        problems.append(Problem(str(uniques[c]), "-", "query is split across shards"))
    for i in np.flatnonzero(same & (rank[1:] < rank[:-1])) + 1:
        problems.append(Problem(qid[i], doc[i], f"rows not ordered by teacher_rank ({rank[i]} after {rank[i - 1]})"))
    expected_score = teacher_score(depth, rank)
    for i in np.flatnonzero(frame[TEACHER_SCORE].to_numpy() != expected_score):
        problems.append(
            Problem(qid[i], doc[i], f"teacher_score {frame[TEACHER_SCORE].iat[i]} != {depth} - {rank[i]} + 1")
        )
    for column, what in ((DOC_ID, "doc id"), (FIRST_STAGE_RANK, FIRST_STAGE_RANK)):
        dup = pd.DataFrame({"q": codes, "v": frame[column].to_numpy()}).duplicated(keep="first").to_numpy()
        for i in np.flatnonzero(dup):
            problems.append(Problem(qid[i], doc[i], f"duplicate {what} {frame[column].iat[i]} in this query"))
    order = np.lexsort((rank, codes))
    sorted_codes = codes[order]
    bad = np.unique(sorted_codes[rank[order] != query_positions(sorted_codes)])
    for c in bad:
        problems += _rank_problems(str(uniques[c]), doc[codes == c], rank[codes == c])
    for c in np.flatnonzero(np.bincount(codes) > depth):
        problems.append(Problem(str(uniques[c]), "-", f"{np.bincount(codes)[c]} rows, more than depth {depth}"))
    return problems


def _rank_problems(qid: str, docs: np.ndarray, ranks: np.ndarray) -> list[Problem]:
    """What is wrong with one query's teacher ranks (they are not exactly 1..n)."""
    n, counts = len(ranks), Counter(ranks.tolist())
    problems = []
    for doc, rank in sorted(zip(docs.tolist(), ranks.tolist(), strict=True), key=lambda x: x[1]):
        if counts[rank] > 1:
            problems.append(Problem(qid, doc, f"duplicate teacher_rank {rank} ({counts[rank]} rows have it)"))
        elif not 1 <= rank <= n:
            problems.append(Problem(qid, doc, f"teacher_rank {rank} outside 1..{n} (the query has {n} rows)"))
    for rank in sorted(set(range(1, n + 1)) - counts.keys()):
        problems.append(Problem(qid, "-", f"teacher_rank {rank} missing (ranks must be exactly 1..{n})"))
    return problems
