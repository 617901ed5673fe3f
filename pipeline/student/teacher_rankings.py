"""The teacher's rankings for stage 2, read from any layout they are published in.

`--data` of `distillm train --stage distill` may be:

    DIR, DIR/data/*.parquet      our export (pipeline.dataset: qid, query, doc_id, teacher_rank[, text])
    X.parquet, X.jsonl           a lightning-ir run table (query_id, doc_id, rank[, query, text, score]),
                                 e.g. our export's __TEACHER-FS-N-sampled-DEPTH__NAME.parquet
    X.parquet (qid, docno, score)  the Hugging Face copies of the published Rank-DistiLLM runs
                                 (huggingface.co/datasets/webis/rank-distillm): rank = order by score
    X.run, X.run.gz (any other name: TREC)  a TREC run, e.g. the Zenodo records of Rank-DistiLLM
                                 (__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run)

Teacher ranks are 1-based positions, 1 = best: a table's `teacher_rank` or `rank` as given
(lightning-ir reads `rank` so); a TREC run's ranking order (rank, then higher score, then file
order: the data contract of `distillm export`); a score-only table's order by score (ties: file
order, as lightning-ir ranks scoreddocs). Query texts come from a `query` column, else from
`queries` (a file or irds:<id>); passage texts from a `text` column, else from the corpus store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.infra.errors import InputError

_QID = ("qid", "query_id")
_DOC = ("doc_id", "docno", "docid")
_RANK = ("teacher_rank", "rank")  # in this order: our export's shards carry first_stage_rank beside teacher_rank
_TABLE_SUFFIXES = (".parquet", ".jsonl", ".json")


def dataset_files(path: str | Path) -> list[Path]:
    """The table files of a dataset: PATH itself, PATH/data/*.parquet or PATH/*.parquet."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(path, None, "dataset not found")
    files = sorted((path / "data").glob("*.parquet")) or sorted(path.glob("*.parquet"))
    if not files:
        raise InputError(path, None, "no Parquet files (expected DIR/data/*.parquet)")
    return files


def dataset_metadata(path: str | Path, files: list[Path]) -> dict[str, Any]:
    """DIR/metadata.json, else the `distillm` key of a Parquet file's schema metadata, else {}."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir() and (path / "metadata.json").exists():
        return json.loads((path / "metadata.json").read_text())
    if files[0].name.endswith(".parquet"):
        schema_meta = pq.read_schema(files[0]).metadata or {}
        if b"distillm" in schema_meta:
            return json.loads(schema_meta[b"distillm"])
    return {}


def is_table(path: Path) -> bool:
    return path.is_dir() or any(path.name.endswith(s) for s in _TABLE_SUFFIXES)


def read_teacher_rankings(path: str | Path, queries: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """(frame with qid, query, doc_id, teacher_rank [, text]; metadata) of a teacher source.

    Rows keep the source's order. InputError names the file for a missing column, a query without
    text, or an empty source.
    """
    path = Path(path)
    files = dataset_files(path)
    if is_table(path):
        frame, metadata = _read_tables(path, files), dataset_metadata(path, files)
    else:
        frame, metadata = _read_trec(path), {"source": str(path), "layout": "trec"}
    if frame.empty:
        raise InputError(path, None, "dataset is empty (no rows)")
    if "query" not in frame:
        if queries is None:
            raise InputError(path, None, "has no query text (no `query` column): pass --queries (a file or irds:<id>)")
        frame["query"] = _query_texts(frame, path, queries)
    return frame, metadata


def _columns(names: list[str], file: Path) -> dict[str, str | None]:
    """Which column of the file holds what (None: absent)."""
    pick = {
        "qid": next((c for c in _QID if c in names), None),
        "doc_id": next((c for c in _DOC if c in names), None),
        "rank": next((c for c in _RANK if c in names), None),
        "score": "score" if "score" in names else None,
        "query": "query" if "query" in names else None,
        "text": "text" if "text" in names else None,
    }
    absent = [what for what in ("qid", "doc_id") if pick[what] is None]
    if pick["rank"] is None and pick["score"] is None:
        absent.append("teacher_rank, rank or score")
    if absent:
        raise InputError(
            file, None, f"teacher rankings lack column(s) {absent} (has {names}); see `distillm train --help` --data"
        )
    return pick


def _read_tables(path: Path, files: list[Path]) -> pd.DataFrame:
    """The needed columns of every file, renamed to ours, with a 1-based teacher_rank."""
    import pyarrow.parquet as pq

    parts = []
    for file in files:
        if file.name.endswith(".parquet"):
            pick = _columns(pq.read_schema(file).names, file)
            table = pq.read_table(file, columns=[c for c in pick.values() if c]).to_pandas()
        else:
            try:
                table = pd.read_json(file, lines=file.name.endswith(".jsonl"), orient="records", dtype=False)
            except ValueError as e:
                raise InputError(file, None, f"not JSON records: {e}") from None
            pick = _columns(list(table.columns), file)
        renamed = table.rename(columns={c: what for what, c in pick.items() if c})
        parts.append(renamed[[what for what, c in pick.items() if c]])
    frame = pd.concat(parts, ignore_index=True)
    frame["qid"], frame["doc_id"] = frame["qid"].astype(str), frame["doc_id"].astype(str)
    if "rank" in frame:
        if not pd.api.types.is_integer_dtype(frame["rank"]):
            raise InputError(files[0], None, f"rank column is {frame['rank'].dtype}, expected integers")
        frame["teacher_rank"] = frame.pop("rank").astype(np.int64)
    else:  # a score-only table: order by score within the query, ties in file order
        order = np.lexsort((np.arange(len(frame)), -frame["score"].to_numpy(), _codes(frame)))
        frame["teacher_rank"] = _positions(frame, order)
    return frame.drop(columns=["score"], errors="ignore")


def _read_trec(path: Path) -> pd.DataFrame:
    from pipeline.dataset.export import ranking_positions
    from pipeline.io.trec import read_trec_run

    run = read_trec_run(path)
    order, position = ranking_positions(run)
    rank = np.empty(len(run), dtype=np.int64)
    rank[order] = position
    return pd.DataFrame({"qid": run["qid"], "doc_id": run["doc_id"], "teacher_rank": rank, "line": run["line"]})


def _codes(frame: pd.DataFrame) -> np.ndarray:
    return pd.factorize(frame["qid"], sort=False)[0]


def _positions(frame: pd.DataFrame, order: np.ndarray) -> np.ndarray:
    """1-based position of each row within its query, given the rows in ranking order."""
    codes = _codes(frame)[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)])) + 1
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = position
    return ranks


def _query_texts(frame: pd.DataFrame, path: Path, queries: str | Path) -> pd.Series:
    from pipeline.io.sources import load_queries

    texts = load_queries(queries)
    known = frame["qid"].isin(texts.keys())
    if not known.all():
        first = frame[~known].iloc[0]
        line = int(first["line"]) if "line" in frame else None
        n = frame.loc[~known, "qid"].nunique()
        raise InputError(path, line, f"query {first['qid']!r} is not in the queries {queries} ({n} unknown queries)")
    return frame["qid"].map(texts)
