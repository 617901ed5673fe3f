"""`distillm validate DIR`: is an exported dataset what its metadata and card say it is?

Checks, each reported as (qid, doc_id, what is wrong):
- every shard has exactly the dataset schema, and the metadata of metadata.json;
- every query's teacher ranks are a full permutation: exactly 1..n, none missing or
  repeated, n <= depth; no doc id twice in a query; first_stage_rank unique per query;
- teacher_score = depth - teacher_rank + 1; no nulls;
- each query's rows are contiguous, ordered by teacher_rank, and in one shard;
- the numbers of queries and rows (in all, and per shard) match metadata.json and the
  card, and the teacher run file has one line per row.

Exit 0 with a summary, or 2 with the offending rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.dataset import METADATA_KEY, dataset_schema
from pipeline.errors import InputError

_COLUMNS = ["qid", "doc_id", "first_stage_rank", "teacher_rank", "teacher_score"]


@dataclass(frozen=True)
class Problem:
    qid: str
    doc_id: str
    message: str


def validate_dataset(path: str | Path) -> tuple[dict[str, Any], list[Problem]]:
    """(summary, problems) for a dataset directory; InputError if it is not one at all."""
    import pyarrow.parquet as pq

    from pipeline.dataset.card import card_counts

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
    tables, shard_of_row = [], []
    for index, name in enumerate(files):
        schema = pq.read_schema(path / name)
        if [(f.name, f.type) for f in schema] != [(f.name, f.type) for f in expected]:
            got = ", ".join(f"{f.name}:{f.type}" for f in schema)
            problems.append(Problem("-", "-", f"{name}: schema is ({got}), expected ({expected.to_string()})"))
            continue
        embedded = json.loads((schema.metadata or {}).get(METADATA_KEY, b"{}"))
        if embedded != metadata:
            problems.append(Problem("-", "-", f"{name}: Parquet metadata differs from metadata.json"))
        table = pq.read_table(path / name, columns=_COLUMNS)
        shard_rows = next((s["rows"] for s in metadata.get("shards", []) if s["file"] == name), None)
        if shard_rows != table.num_rows:
            problems.append(Problem("-", "-", f"{name}: {table.num_rows} rows, metadata.json says {shard_rows}"))
        tables.append(table)
        shard_of_row.append(np.full(table.num_rows, index, dtype=np.int32))
    frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True) if tables else pd.DataFrame()
    n_queries = frame["qid"].nunique() if len(frame) else 0
    nulls = {c: int(frame[c].isna().sum()) for c in _COLUMNS} if len(frame) else {}
    problems += [Problem("-", "-", f"column {c}: {n} nulls") for c, n in nulls.items() if n]
    if len(frame) and len(tables) == len(files) and not any(nulls.values()):  # rows readable as the schema says
        problems += check_rows(frame, np.concatenate(shard_of_row), int(metadata["depth"]))

    counts = {"queries": n_queries, "rows": len(frame), "shards": len(files)}
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
    run_file = path / str(metadata.get("teacher_run_file"))
    if not run_file.is_file():
        problems.append(Problem("-", "-", f"teacher run {run_file.name} is missing"))
    else:
        with open(run_file, "rb") as f:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if lines != len(frame):
            problems.append(
                Problem("-", "-", f"teacher run {run_file.name} has {lines} lines, the data {len(frame)} rows")
            )
    summary = {**counts, "depth": metadata.get("depth"), "with_text": bool(metadata.get("with_text"))}
    return summary, problems


def check_rows(frame: pd.DataFrame, shard: np.ndarray, depth: int) -> list[Problem]:
    """Row-level checks (vectorised; only queries found bad are looked at one by one)."""
    problems: list[Problem] = []
    qid, doc = frame["qid"].to_numpy(), frame["doc_id"].to_numpy()
    rank = frame["teacher_rank"].to_numpy().astype(np.int64)
    codes, uniques = pd.factorize(frame["qid"], sort=False)
    same = codes[1:] == codes[:-1]
    blocks = codes[np.r_[True, ~same]]
    for c in np.unique(blocks[pd.Series(blocks).duplicated().to_numpy()]):
        problems.append(Problem(str(uniques[c]), "-", "rows of this query are not contiguous"))
    split = pd.Series(shard).groupby(codes).nunique()
    for c in split.index[split.to_numpy() > 1]:
        problems.append(Problem(str(uniques[c]), "-", "query is split across shards"))
    for i in np.flatnonzero(same & (rank[1:] < rank[:-1])) + 1:
        problems.append(Problem(qid[i], doc[i], f"rows not ordered by teacher_rank ({rank[i]} after {rank[i - 1]})"))
    expected_score = (depth - rank + 1).astype(np.float32)
    for i in np.flatnonzero(frame["teacher_score"].to_numpy() != expected_score):
        problems.append(
            Problem(qid[i], doc[i], f"teacher_score {frame['teacher_score'].iat[i]} != {depth} - {rank[i]} + 1")
        )
    for column, what in (("doc_id", "doc id"), ("first_stage_rank", "first_stage_rank")):
        dup = pd.DataFrame({"q": codes, "v": frame[column].to_numpy()}).duplicated(keep="first").to_numpy()
        for i in np.flatnonzero(dup):
            problems.append(Problem(qid[i], doc[i], f"duplicate {what} {frame[column].iat[i]} in this query"))
    order = np.lexsort((rank, codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order)) - np.repeat(starts, sizes) + 1
    bad = np.unique(sorted_codes[rank[order] != position])
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


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("validate", help="check an exported dataset (permutations, counts, card)")
    p.add_argument("dir", type=Path, help="dataset directory (distillm export)")
    p.add_argument("--max-problems", type=int, default=100, help="offending rows to print (0: all)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    summary, problems = validate_dataset(args.dir)
    if not problems:
        print(
            f"{args.dir}: valid: {summary['queries']} queries, {summary['rows']} rows, {summary['shards']} shard(s), "
            f"depth {summary['depth']}, text: {'yes' if summary['with_text'] else 'no'}"
        )
        return 0
    shown = problems if args.max_problems <= 0 else problems[: args.max_problems]
    print("qid\tdoc_id\tproblem")
    for p in shown:
        print(f"{p.qid}\t{p.doc_id}\t{p.message}")
    if len(shown) < len(problems):
        print(f"... and {len(problems) - len(shown)} more")
    print(f"distillm validate: {args.dir}: INVALID: {len(problems)} problem(s)", file=sys.stderr)
    return 2
