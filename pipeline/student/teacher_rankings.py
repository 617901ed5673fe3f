"""The teacher's rankings for stage 2, read from any layout they are published in.

`--data` of `distillm train --stage distill` may be:

    DIR, DIR/data/*.parquet      our export, read by the data contract's column names
                                 (`pipeline.contract.dataset`: qid, query, doc_id, teacher_rank[, text])
    X.parquet, X.jsonl           a lightning-ir run table (query_id, doc_id, rank[, query, text, score]),
                                 e.g. our export's __TEACHER-FS-N-sampled-DEPTH__NAME.parquet
    X.parquet (qid, docno, score)  the Hugging Face copies of the published Rank-DistiLLM runs
                                 (huggingface.co/datasets/webis/rank-distillm): rank = order by score
    X.run, X.run.gz (any other name: TREC)  a TREC run, e.g. the Zenodo records of Rank-DistiLLM
                                 (__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run)

Teacher ranks are 1-based positions, 1 = best: our `teacher_rank` or a published table's `rank`
as given (lightning-ir reads `rank` so); a TREC run's ranking order (the data contract's:
`pipeline.contract.run.ranking_order`); a score-only table's order by score (ties: file order, as
lightning-ir ranks scoreddocs). Query texts come from a `query` column, else from `queries` (a
file or irds:<id>); passage texts from a `text` column, else from the corpus store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract.dataset import DOC_ID, QID, QUERY, TEACHER_RANK, TEXT, dataset_files, read_metadata
from pipeline.contract.queries import load_queries
from pipeline.contract.run import query_positions, ranking_order, ranking_positions, read_trec_run
from pipeline.infra.errors import InputError

OURS = (QID, DOC_ID, TEACHER_RANK)  # a table with these columns is our export, read by these names
# the published layouts' names for what our columns hold: lightning-ir's, the Hugging Face copies'
_QID = (QID, "query_id")
_DOC = (DOC_ID, "docno", "docid")
_TABLE_SUFFIXES = (".parquet", ".jsonl", ".json")


def source_files(path: str | Path) -> list[Path]:
    """The table files of a source: PATH itself, or a dataset folder's shards."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(path, None, "dataset not found")
    files = dataset_files(path)
    if not files:
        raise InputError(path, None, "no Parquet files (expected DIR/data/*.parquet)")
    return files


def is_table(path: Path) -> bool:
    return path.is_dir() or any(path.name.endswith(s) for s in _TABLE_SUFFIXES)


def read_teacher_rankings(path: str | Path, queries: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """(frame with qid, query, doc_id, teacher_rank [, text]; metadata) of a teacher source.

    Rows keep the source's order. InputError names the file for a missing column, a query without
    text, or an empty source.
    """
    path = Path(path)
    files = source_files(path)
    if is_table(path):
        frame, metadata = _read_tables(files), read_metadata(path) or {}
    else:
        frame, metadata = _read_trec(path), {"source": str(path), "layout": "trec"}
    if frame.empty:
        raise InputError(path, None, "dataset is empty (no rows)")
    if QUERY not in frame:
        if queries is None:
            raise InputError(path, None, "has no query text (no `query` column): pass --queries (a file or irds:<id>)")
        frame[QUERY] = _query_texts(frame, path, queries)
    return frame, metadata


def _columns(names: list[str], file: Path) -> dict[str, str | None]:
    """Which column of the file holds what, by our names (None: absent): ours as they are, a
    published layout's by its names."""
    if set(OURS) <= set(names):
        return {name: name if name in names else None for name in (*OURS, QUERY, TEXT)}
    pick = {
        QID: next((c for c in _QID if c in names), None),
        DOC_ID: next((c for c in _DOC if c in names), None),
        "rank": "rank" if "rank" in names else None,
        "score": "score" if "score" in names else None,
        QUERY: QUERY if QUERY in names else None,
        TEXT: TEXT if TEXT in names else None,
    }
    absent = [what for what in (QID, DOC_ID) if pick[what] is None]
    if pick["rank"] is None and pick["score"] is None:
        absent.append(f"{TEACHER_RANK}, rank or score")
    if absent:
        raise InputError(
            file, None, f"teacher rankings lack column(s) {absent} (has {names}); see `distillm train --help` --data"
        )
    return pick


def _read_tables(files: list[Path]) -> pd.DataFrame:
    """The needed columns of every file, named ours, with a 1-based teacher_rank."""
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
        parts.append(renamed[[what for what, c in pick.items() if c]].rename(columns={"rank": TEACHER_RANK}))
    frame = pd.concat(parts, ignore_index=True)
    frame[QID], frame[DOC_ID] = frame[QID].astype(str), frame[DOC_ID].astype(str)
    if TEACHER_RANK in frame:
        if not pd.api.types.is_integer_dtype(frame[TEACHER_RANK]):
            raise InputError(files[0], None, f"rank column is {frame[TEACHER_RANK].dtype}, expected integers")
        frame[TEACHER_RANK] = frame[TEACHER_RANK].astype(np.int64)
    else:  # a score-only table: order by score within the query, ties in file order
        codes = pd.factorize(frame[QID], sort=False)[0]
        order = ranking_order(np.zeros(len(frame), dtype=np.int64), frame["score"].to_numpy(), codes)
        frame[TEACHER_RANK] = _ranks(order, query_positions(codes[order]))
    return frame.drop(columns=["score"], errors="ignore")


def _read_trec(path: Path) -> pd.DataFrame:
    run = read_trec_run(path)
    order, position = ranking_positions(run)
    return pd.DataFrame(
        {QID: run["qid"], DOC_ID: run["doc_id"], TEACHER_RANK: _ranks(order, position), "line": run["line"]}
    )


def _ranks(order: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Each row's position in its query's ranking, given the rows in ranking order and their positions."""
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = position
    return ranks


def _query_texts(frame: pd.DataFrame, path: Path, queries: str | Path) -> pd.Series:
    texts = load_queries(queries)
    known = frame[QID].isin(texts.keys())
    if not known.all():
        first = frame[~known].iloc[0]
        line = int(first["line"]) if "line" in frame else None
        n = frame.loc[~known, QID].nunique()
        raise InputError(path, line, f"query {first[QID]!r} is not in the queries {queries} ({n} unknown queries)")
    return frame[QID].map(texts)
