"""The Rank-DistiLLM dataset: the teacher's rankings as Parquet shards with fixed columns.

    DIR/data/train-0000i-of-0000N.parquet   DATASET_SCHEMA (+ `text` with --with-text)
    DIR/metadata.json                       how it was made; also in each shard's schema metadata (METADATA_KEY)

One row per (query, candidate). Ordering: rows by query (in the teacher run's order), then
`teacher_rank` (1 = best); a query's rows are contiguous and in one shard. `teacher_score` is
`depth - teacher_rank + 1` (`teacher_score`). `distillm export` writes it (`write_shards`),
`distillm validate` checks it and the student trains on it (`dataset_files`, `read_metadata`,
`read_columns`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

DATASET_FORMAT = "rank-distillm/1"
METADATA_KEY = b"distillm"  # Parquet schema metadata: the dataset metadata as JSON
SHARD_PATTERN = "data/train-{index:05d}-of-{count:05d}.parquet"  # Hugging Face's shard naming
CHUNK_ROWS = 65_536  # rows per Parquet row group, and per batch read

QID, QUERY, DOC_ID = "qid", "query", "doc_id"
FIRST_STAGE_RANK, FIRST_STAGE_SCORE = "first_stage_rank", "first_stage_score"
TEACHER_RANK, TEACHER_SCORE = "teacher_rank", "teacher_score"
FIRST_STAGE, TEACHER, TEXT = "first_stage", "teacher", "text"

DATASET_SCHEMA = pa.schema(
    [
        pa.field(QID, pa.string(), nullable=False),
        pa.field(QUERY, pa.string(), nullable=False),
        pa.field(DOC_ID, pa.string(), nullable=False),
        pa.field(FIRST_STAGE_RANK, pa.int32(), nullable=False),
        pa.field(FIRST_STAGE_SCORE, pa.float64(), nullable=False),
        pa.field(TEACHER_RANK, pa.int32(), nullable=False),  # 1 = best
        pa.field(TEACHER_SCORE, pa.float32(), nullable=False),  # depth - teacher_rank + 1
        pa.field(FIRST_STAGE, pa.string(), nullable=False),
        pa.field(TEACHER, pa.string(), nullable=False),
    ]
)
TEXT_FIELD = pa.field(TEXT, pa.string(), nullable=False)  # only with --with-text


def dataset_schema(with_text: bool) -> pa.Schema:
    """The fixed schema, with the passage text column appended when exported with text."""
    return DATASET_SCHEMA.append(TEXT_FIELD) if with_text else DATASET_SCHEMA


def teacher_score(depth: int, rank: np.ndarray | pd.Series) -> np.ndarray:
    """The `teacher_score` of teacher ranks: depth - rank + 1, as float32 (the teacher's gains)."""
    return np.asarray(depth - np.asarray(rank, dtype=np.int64) + 1).astype(np.float32)


# --- writing ----------------------------------------------------------------------------------


def write_shards(
    rows: pd.DataFrame | pa.Table,
    metadata: dict[str, Any],
    out: Path,
    corpus=None,
    complete: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> None:
    """Write metadata["shards"] from rows (in order), a row group per chunk; text from corpus if given.

    `rows` is a frame or an Arrow table (e.g. memory-mapped: only one chunk is in memory at a
    time); `complete` adds columns to each chunk (as a frame) before it is written."""
    import pyarrow.parquet as pq

    schema = dataset_schema(corpus is not None).with_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    names = {FIRST_STAGE: metadata["first_stage"], TEACHER: metadata["teacher"]}
    start = 0
    for shard in metadata["shards"]:
        end = start + shard["rows"]
        with pq.ParquetWriter(out / shard["file"], schema) as writer:
            for lo in range(start, end, CHUNK_ROWS):
                hi = min(lo + CHUNK_ROWS, end)
                chunk = rows.iloc[lo:hi] if isinstance(rows, pd.DataFrame) else rows.slice(lo, hi - lo).to_pandas()
                if complete is not None:
                    chunk = complete(chunk)
                columns = {
                    field.name: pa.array(chunk[field.name], field.type)
                    for field in schema
                    if field.name in chunk.columns
                }
                columns.update({k: pa.repeat(v, len(chunk)).cast(pa.string()) for k, v in names.items()})
                if corpus is not None:
                    columns[TEXT] = pa.array([p.text for p in corpus.passages(list(chunk[DOC_ID]))], pa.string())
                writer.write_table(pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema))
        start = end


# --- reading ----------------------------------------------------------------------------------


def dataset_files(path: str | Path) -> list[Path]:
    """The Parquet shards of a dataset folder (DIR/data/*.parquet, else DIR/*.parquet), in name order."""
    path = Path(path)
    return sorted((path / "data").glob("*.parquet")) or sorted(path.glob("*.parquet"))


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """A dataset's metadata: DIR/metadata.json, else the METADATA_KEY of a shard's schema metadata
    (the first shard of DIR, or a shard file given alone); None when there is none."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        if (path / "metadata.json").exists():
            return json.loads((path / "metadata.json").read_text())
        path = next(iter(dataset_files(path)), path)
    if path.name.endswith(".parquet"):
        schema_meta = pq.read_schema(path).metadata or {}
        if METADATA_KEY in schema_meta:
            return json.loads(schema_meta[METADATA_KEY])
    return None


def iter_batches(files: list[Path], columns: list[str]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(shard index, batch of `columns`) of each shard in turn, CHUNK_ROWS rows at a time."""
    import pyarrow.parquet as pq

    for index, file in enumerate(files):
        for batch in pq.ParquetFile(file).iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            yield index, batch


def read_columns(files: list[Path], columns: list[str]) -> pd.DataFrame:
    """`columns` of every shard, in row order, as one frame."""
    import pyarrow.parquet as pq

    return pd.concat([pq.read_table(f, columns=columns).to_pandas() for f in files], ignore_index=True)
