"""The Rank-DistiLLM dataset: the teacher's rankings as Parquet, a dataset card, checks, Zenodo.

    distillm export ...          teacher run + first-stage run -> DIR (Parquet shards, card, lightning-ir runs)
    distillm validate DIR        every query a full permutation; counts match metadata and card
    distillm card DIR            rewrite DIR/README.md from DIR/metadata.json
    distillm publish DIR ...     versioned archive + manifest -> a Zenodo deposition
    distillm fetch-dataset REC   download a published version, verify, unpack, validate

One row per (query, candidate) with the columns of `DATASET_SCHEMA`; the schema is fixed
because the student's trainer reads it.
"""

from __future__ import annotations

import pyarrow as pa

DATASET_FORMAT = "rank-distillm/1"
METADATA_KEY = b"distillm"  # Parquet schema metadata: the dataset metadata as JSON
SHARD_PATTERN = "data/train-{index:05d}-of-{count:05d}.parquet"  # Hugging Face's shard naming

DATASET_SCHEMA = pa.schema(
    [
        pa.field("qid", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("first_stage_rank", pa.int32(), nullable=False),
        pa.field("first_stage_score", pa.float64(), nullable=False),
        pa.field("teacher_rank", pa.int32(), nullable=False),  # 1 = best
        pa.field("teacher_score", pa.float32(), nullable=False),  # depth - teacher_rank + 1
        pa.field("first_stage", pa.string(), nullable=False),
        pa.field("teacher", pa.string(), nullable=False),
    ]
)
TEXT_FIELD = pa.field("text", pa.string(), nullable=False)  # only with --with-text


def dataset_schema(with_text: bool) -> pa.Schema:
    """The fixed schema, with the passage text column appended when exported with text."""
    return DATASET_SCHEMA.append(TEXT_FIELD) if with_text else DATASET_SCHEMA
