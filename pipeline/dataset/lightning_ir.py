"""The teacher's rankings as lightning-ir run files: its `RunDataset` reads them with no conversion.

    __{teacher}-{first stage}-{label}-sampled-{depth}__{id}.parquet   query_id, query, doc_id, rank, score[, text]
    __{teacher}-{first stage}-{label}-sampled-{depth}__{dashed ir_datasets id}.run   TREC, no texts

`RunDataset(PARQUET, depth=DEPTH, targets="rank")` gives each query's documents with targets
`depth - rank + 1` (the teacher's gains); `rank` is the teacher's rank (1 = best) and `score` the
same gain, so `targets="score"` agrees. What shapes the files (lightning-ir 0.0.6):

- the format is the name's first suffix, so no other dot may appear in the name;
- the dataset id is the part after the last `__`, dashes mapped back to a registered ir_datasets
  id; for a registered id lightning-ir fetches that dataset's qrels and passages from the
  internet. So the Parquet file with passage text names the dataset itself (not registered: read
  offline, nothing else needed); without text it names the ir_datasets id, where lightning-ir
  finds the passages. The `.run` (no texts at all) is written only under a known ir_datasets id;
- target columns are picked by substring, so no other column may contain "rank", "score" or
  "relevance" (a `first_stage_rank` beside `rank` would be mixed into the targets).
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any

from pipeline.contract.dataset import DOC_ID, QID, QUERY, TEACHER_RANK, TEACHER_SCORE, TEXT

log = logging.getLogger(__name__)

COLUMNS = ("query_id", "query", "doc_id", "rank", "score")  # then "text" when exported with text
_SOURCE_COLUMNS = {QID: "query_id", QUERY: "query", DOC_ID: "doc_id", TEACHER_RANK: "rank"}  # ours -> theirs


def name_part(text: str) -> str:
    """A name as a part of a lightning-ir file name: no dots (format) and no `__` (id separator)."""
    return re.sub(r"_{2,}", "_", text.replace(".", "-"))


def run_stem(teacher: str, first_stage: str, label: str, depth: int) -> str:
    return f"__{name_part(teacher)}-{name_part(first_stage)}-{name_part(label)}-sampled-{depth}__"


@functools.cache
def registered_ids() -> frozenset[str]:
    """The ids ir_datasets knows, as written and dashed (how lightning-ir maps a file name back)."""
    try:
        import ir_datasets
    except ImportError:  # pragma: no cover - part of the standard environment
        return frozenset()
    ids = set(ir_datasets.registry)
    return frozenset(ids | {i.replace("/", "-") for i in ids})


def file_names(metadata: dict[str, Any]) -> dict[str, str | None]:
    """{"parquet": name, "trec": name or None} for the metadata's teacher, first stage, label, depth and ids."""
    stem = run_stem(metadata["teacher"], metadata["first_stage"], metadata["sample_label"], metadata["depth"])
    irds = metadata.get("ir_datasets_id")
    own = name_part(metadata["name"])
    parquet_id = own if metadata["with_text"] or not irds else irds.replace("/", "-")
    if parquet_id == own and own in registered_ids():
        log.warning(
            "dataset name %s is an ir_datasets id: lightning-ir would fetch that dataset; use another --name", own
        )
    return {"parquet": f"{stem}{parquet_id}.parquet", "trec": f"{stem}{irds.replace('/', '-')}.run" if irds else None}


def ir_datasets_id(queries: str, given: str | None) -> str | None:
    """The ir_datasets id of the queries: --dataset-id, or the id of irds:<id> queries; a warning for none
    or an id ir_datasets does not know (lightning-ir would not find its texts)."""
    dataset_id = given or (queries.removeprefix("irds:") if queries.startswith("irds:") else None)
    if dataset_id is None:
        log.warning(
            "no ir_datasets id for the queries %s (give --dataset-id, e.g. msmarco-passage/train/judged): "
            "the TREC run for lightning-ir, which names that id, is not written",
            queries,
        )
    elif dataset_id not in registered_ids():
        log.warning(
            "--dataset-id %s is not a registered ir_datasets id: lightning-ir will not find its queries and passages",
            dataset_id,
        )
    return dataset_id


def write_parquet(shards: list[Path], out: Path, with_text: bool) -> None:
    """The lightning-ir Parquet run from the dataset's shards (their order), a row group per record batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        pa.field("query_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
    ]
    if with_text:
        fields.append(pa.field("text", pa.string(), nullable=False))
    schema = pa.schema(fields)
    columns = [*_SOURCE_COLUMNS, TEACHER_SCORE, *([TEXT] if with_text else [])]
    with pq.ParquetWriter(out, schema) as writer:
        for shard in shards:
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=65_536, columns=columns):
                arrays = [batch.column(name) for name in columns]
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    if not with_text:
        log.info("%s has no passage text: lightning-ir takes the passages from ir_datasets", out.name)


def problems(path: Path, teacher: Any) -> list[str]:
    """What is wrong with a lightning-ir Parquet run, given the dataset's (qid, doc_id, teacher_rank) frame."""
    import pyarrow.parquet as pq

    found = []
    if "." in path.name.removesuffix(".parquet"):
        found.append(f"{path.name}: a dot in the name (lightning-ir takes the format from the first suffix)")
    names = pq.read_schema(path).names
    if names[: len(COLUMNS)] != list(COLUMNS) or not set(names[len(COLUMNS) :]) <= {"text"}:
        found.append(f"{path.name}: columns {names}, expected {list(COLUMNS)} [+ text]")
        return found
    run = pq.read_table(path, columns=["query_id", "doc_id", "rank"]).to_pandas()
    run.columns = [QID, DOC_ID, TEACHER_RANK]
    if len(run) != len(teacher):
        found.append(f"{path.name}: {len(run)} rows, the data {len(teacher)}")
        return found
    # the same rankings, in any row order (lightning-ir sorts by query and rank)
    ours, theirs = (f.sort_values(["qid", "doc_id"], kind="stable") for f in (teacher, run))
    if not all((ours[c].to_numpy() == theirs[c].to_numpy()).all() for c in run.columns):
        found.append(f"{path.name}: (query_id, doc_id, rank) differ from the data's (qid, doc_id, teacher_rank)")
    return found
