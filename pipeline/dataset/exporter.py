"""The export (`distillm export`): the teacher's rankings joined with the first stage, as Parquet shards.

    metadata = export_dataset(ExportSettings(first_stage=FS.run, teacher=T.run, queries=Q.tsv, out=DIR,
                                             teacher_stats=T.run.stats.json))

Only the teacher's re-ranked top `depth` of each query goes in (depth from the stats'
provenance); every kept (qid, doc_id) must be in the first-stage run, every query in the
queries, and with a corpus every doc in the corpus, or InputError names the teacher run's
line. Rows are ordered by query (teacher-run order), then teacher rank. DIR gets:

    data/train-0000i-of-0000N.parquet   queries are never split across shards
    metadata.json                       also in each shard's schema metadata (key b"distillm")
    README.md                           the dataset card (pipeline.dataset.dataset_card)
    __{teacher}-{first stage}-{label}-sampled-{depth}__{name}.parquet   lightning-ir's RunDataset reads it
    __{teacher}-{first stage}-{label}-sampled-{depth}__{ir_datasets id}.run   the same as TREC, with a known id

(the lightning-ir files and their naming: pipeline.dataset.lightning_ir)

Memory does not grow with the runs: they are read one query at a time and the joined rows go
to a temporary Arrow file beside DIR (`pipeline.dataset.rows`), which is read back memory-mapped
one chunk of rows at a time, as is the passage text from the corpus store. A run whose queries
are not contiguous is read whole instead, as before (~1 GB per 1M lines).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import __version__
from pipeline.contract.dataset import (
    CHUNK_ROWS,
    DATASET_FORMAT,
    DOC_ID,
    QID,
    QUERY,
    SHARD_PATTERN,
    TEACHER_RANK,
    TEACHER_SCORE,
    teacher_score,
    write_shards,
)
from pipeline.contract.run import RunWriter
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportSettings:
    """One export: the runs and what describes them, the queries (and passages), the output's naming."""

    first_stage: Path  # the first-stage TREC run the teacher re-ranked
    teacher: Path  # the teacher's TREC run (distillm rerank, or any other)
    queries: str  # queries file or irds:<id>
    out: Path  # output directory (replaced if it is an earlier export)
    teacher_stats: Path | None = None  # distillm rerank's stats JSON (provenance.depth ...)
    # a teacher run from elsewhere (no stats): the model, the depth it re-ranked, the prompt or method
    teacher_model: str | None = None
    teacher_depth: int | None = None  # default: all its ranks
    teacher_prompt: str | None = None
    teacher_source: str | None = None  # where the teacher run comes from (URL, DOI, citation)
    corpus: Path | None = None  # corpus store: checks doc ids; with `with_text` the text column
    with_text: bool = False  # the passage text (MS MARCO's licence terms apply)
    name: str | None = None  # dataset name (default rank-distillm-TEACHER-FIRSTSTAGE)
    shard_rows: int = 1_000_000  # rows per Parquet shard (whole queries)
    first_stage_name: str | None = None  # default: the first-stage run's tag
    teacher_name: str | None = None  # default: the teacher run's tag
    dataset_id: str | None = None  # ir_datasets id of the queries (names the lightning-ir .run)
    sample_label: str | None = None  # query-sample label in the run names (default: the number of queries)
    license: str = "cc-by-nc-4.0"  # licence id for the card and Zenodo


def shard_bounds(query_sizes: np.ndarray, shard_rows: int) -> list[tuple[int, int]]:
    """(first row, end row) of each shard: whole queries, at most shard_rows rows unless one query is larger."""
    bounds, start, rows = [], 0, 0
    for size in query_sizes.tolist():
        if rows and rows + size > shard_rows:
            bounds.append((start, start + rows))
            start, rows = start + rows, 0
        rows += size
    bounds.append((start, start + rows))
    return bounds


def _stats_provenance(stats_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        stats = json.loads(stats_path.read_text())
    except FileNotFoundError:
        raise InputError(stats_path, None, "teacher stats not found") from None
    except json.JSONDecodeError as e:
        raise InputError(stats_path, e.lineno, f"invalid JSON: {e.msg}") from None
    provenance = stats.get("provenance") if isinstance(stats, dict) else None
    if not isinstance(provenance, dict) or not isinstance(provenance.get("depth"), int) or provenance["depth"] < 1:
        raise InputError(stats_path, None, "expected a teacher stats file with provenance.depth (distillm rerank)")
    return stats, provenance


def teacher_provenance(
    settings: ExportSettings, n_queries: int, shortest: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stats, provenance) of the teacher run (`n_queries` queries, the shortest with `shortest`
    candidates): from `distillm rerank`'s stats JSON, or, for a run from elsewhere (a published
    run, RankGPT's, another tool's), from the command line."""
    if settings.teacher_stats is not None:
        if settings.teacher_model or settings.teacher_depth or settings.teacher_prompt:
            raise ValueError("--teacher-model/--teacher-depth/--teacher-prompt describe a run without --teacher-stats")
        stats, provenance = _stats_provenance(settings.teacher_stats)
        return stats, {**provenance, "source": settings.teacher_source}
    if not settings.teacher_model:
        raise ValueError("a teacher run without --teacher-stats needs --teacher-model (and --teacher-depth)")
    depth = settings.teacher_depth or shortest
    if depth < 1:
        raise ValueError("--teacher-depth must be positive")
    log.info(
        "teacher run %s from outside: model %s, depth %d (given on the command line)",
        settings.teacher,
        settings.teacher_model,
        depth,
    )
    provenance = {
        "model": settings.teacher_model,
        "depth": depth,
        "prompt": settings.teacher_prompt,
        "source": settings.teacher_source,
    }
    return {"queries": n_queries}, provenance


def export_dataset(settings: ExportSettings) -> dict[str, Any]:
    """Write the dataset directory described in the module docstring; returns its metadata."""
    if settings.shard_rows < 1:
        raise ValueError("--shard-rows must be positive")
    if settings.with_text and settings.corpus is None:
        raise ValueError("--with-text needs --corpus")
    out = Path(settings.out)
    out.parent.mkdir(parents=True, exist_ok=True)  # a DVC stage may name a folder no stage made yet
    rows_path = out.with_name(out.name + ".rows.tmp")  # the joined rows, read back slice by slice
    try:
        joined = _join(settings, rows_path)
        return _write(settings, joined, out)
    finally:
        rows_path.unlink(missing_ok=True)


@dataclass
class _Joined:
    """The teacher run joined with the first stage: the rows (a memory-mapped Arrow table,
    `pipeline.dataset.rows.ROWS_SCHEMA`, ordered by query then teacher rank) and per query, in
    order, its id, its number of rows and the teacher line of its first row."""

    rows: pa.Table
    qids: list[str]
    sizes: list[int]
    top_lines: list[int]
    stats: dict[str, Any]
    provenance: dict[str, Any]
    names: dict[str, str]


def _join(settings: ExportSettings, rows_path: Path) -> _Joined:
    """Read both runs (checking every line), the teacher's provenance, and join them into rows_path:
    query by query, or, for a run whose queries are not contiguous, both runs whole (as before)."""
    from pipeline.contract.run import NotGrouped
    from pipeline.dataset.rows import FirstStageIndex, join_rows, read_rows, scan_teacher

    try:
        scan = scan_teacher(settings.teacher)  # empty runs raise
        first_stage = FirstStageIndex(settings.first_stage)
    except NotGrouped:
        return _join_in_memory(settings, rows_path)
    stats, provenance = teacher_provenance(settings, len(scan.qids), min(scan.sizes))
    _check_query_count(settings, stats, len(scan.qids))
    join_rows(settings.teacher, first_stage, provenance["depth"], rows_path)
    depth = provenance["depth"]
    names = _names(settings, first_stage.tag, scan.tag)
    return _Joined(
        read_rows(rows_path), scan.qids, [min(depth, n) for n in scan.sizes], scan.top_lines, stats, provenance, names
    )


def _join_in_memory(settings: ExportSettings, rows_path: Path) -> _Joined:
    from pipeline.contract.run import read_trec_run
    from pipeline.dataset.rows import ROWS_SCHEMA, read_rows, teacher_rows

    teacher, first_stage = read_trec_run(settings.teacher), read_trec_run(settings.first_stage)  # empty runs raise
    counts = teacher.groupby("qid", sort=False).size()
    stats, provenance = teacher_provenance(settings, len(counts), int(counts.min()))
    _check_query_count(settings, stats, len(counts))
    rows = teacher_rows(teacher, settings.teacher, first_stage, settings.first_stage, provenance["depth"])
    names = _names(settings, str(first_stage["tag"].iloc[0]), str(teacher["tag"].iloc[0]))
    del teacher, first_stage
    with pa.OSFile(str(rows_path), "wb") as sink, pa.ipc.new_file(sink, ROWS_SCHEMA) as writer:
        writer.write_table(pa.Table.from_pandas(rows[ROWS_SCHEMA.names], schema=ROWS_SCHEMA, preserve_index=False))
    firsts = rows.groupby("qid", sort=False).head(1)
    sizes = rows.groupby("qid", sort=False).size().tolist()
    return _Joined(
        read_rows(rows_path), firsts["qid"].tolist(), sizes, firsts["line"].tolist(), stats, provenance, names
    )


def _check_query_count(settings: ExportSettings, stats: dict[str, Any], n_queries: int) -> None:
    if isinstance(stats.get("queries"), int) and stats["queries"] != n_queries:
        raise InputError(
            settings.teacher_stats,
            None,
            f"stats describe {stats['queries']} queries, {settings.teacher} has {n_queries}",
        )


def _names(settings: ExportSettings, first_stage_tag: str, teacher_tag: str) -> dict[str, str]:
    names = {
        "first_stage": settings.first_stage_name or first_stage_tag,
        "teacher": settings.teacher_name or teacher_tag,
    }
    for what, name in names.items():  # they name files and tag a TREC run
        if not re.fullmatch(r"[\w.+-]+", name):
            raise ValueError(f"{what} name {name!r}: use letters, digits, '.', '+', '-', '_' only")
    return names


def _write(settings: ExportSettings, joined: _Joined, out: Path) -> dict[str, Any]:
    """Check the rows' queries and passages, then write the dataset directory (built aside, renamed)."""
    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.queries import load_queries
    from pipeline.dataset.dataset_card import write_card
    from pipeline.dataset.lightning_ir import write_parquet

    queries = load_queries(settings.queries)
    corpus = None if settings.corpus is None else CorpusStore(settings.corpus)
    _check_references(joined, settings, queries, corpus)
    bounds = shard_bounds(np.asarray(joined.sizes), settings.shard_rows)
    metadata = build_metadata(settings, joined.stats, joined.provenance, joined.names, len(joined.sizes), bounds)
    if out.exists() and any(out.iterdir()) and not (out / "metadata.json").exists():
        raise InputError(out, None, "exists and is not a dataset export; refusing to overwrite it")
    tmp = out.with_name(out.name + ".tmp")  # built aside and renamed: never a half-written dataset
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    depth = joined.provenance["depth"]

    def complete(chunk: pd.DataFrame) -> pd.DataFrame:
        chunk[QUERY] = chunk[QID].map(queries)
        chunk[TEACHER_SCORE] = teacher_score(depth, chunk[TEACHER_RANK])
        return chunk

    write_shards(joined.rows, metadata, tmp, corpus if settings.with_text else None, complete)
    write_parquet(
        [tmp / s["file"] for s in metadata["shards"]], tmp / metadata["lightning_ir_file"], settings.with_text
    )
    if metadata["teacher_run_file"]:
        write_teacher_run(joined.rows, depth, joined.names["teacher"], tmp / metadata["teacher_run_file"])
    (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    write_card(tmp, metadata)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return metadata


def write_teacher_run(rows: pa.Table, depth: int, tag: str, path: Path) -> None:
    """The rows as a TREC run (rank = teacher rank, score = depth - rank + 1), chunk by chunk."""
    with RunWriter(path, tag) as writer:
        for batch in rows.to_batches(max_chunksize=CHUNK_ROWS):
            ranks = batch.column(TEACHER_RANK).to_pylist()
            scores = [float(depth - r + 1) for r in ranks]
            writer.write_rows(batch.column(QID).to_pylist(), batch.column(DOC_ID).to_pylist(), ranks, scores)


def _check_references(joined: _Joined, settings: ExportSettings, queries: dict[str, str], corpus) -> None:
    """Every kept query must have a text and, given a corpus, every kept doc a passage (the first
    row of each in row order is named; the rows are checked a slice at a time)."""
    for qid, line in zip(joined.qids, joined.top_lines, strict=True):
        if qid not in queries:
            raise InputError(settings.teacher, int(line), f"query {qid!r} is not in the queries {settings.queries}")
    if corpus is None:
        return
    missing: set[str] = set()
    first: tuple[str, int] | None = None
    for batch in joined.rows.to_batches(max_chunksize=CHUNK_ROWS):
        doc_ids = batch.column("doc_id").to_pylist()
        _, found = corpus.rows_of(doc_ids)
        if not found.all():
            bad = np.flatnonzero(~found)
            missing.update(doc_ids[i] for i in bad)
            if first is None:
                first = (doc_ids[bad[0]], batch.column("line")[int(bad[0])].as_py())
    if first is not None:
        raise InputError(
            settings.teacher,
            int(first[1]),
            f"doc {first[0]!r} is not in the corpus {settings.corpus} ({len(missing)} unknown doc ids)",
        )


def build_metadata(
    settings: ExportSettings,
    stats: dict[str, Any],
    provenance: dict[str, Any],
    names: dict[str, str],
    n_queries: int,
    bounds: list[tuple[int, int]],
) -> dict[str, Any]:
    """The dataset metadata: how it was made (teacher provenance), counts, repairs, shards, file names."""
    from pipeline.dataset.lightning_ir import file_names, ir_datasets_id

    queries = str(settings.queries)
    dataset_id = settings.dataset_id or (
        queries.removeprefix("irds:") if queries.startswith("irds:") else Path(queries).stem
    )
    label = settings.sample_label or str(n_queries)
    backend = provenance.get("backend")
    metadata = {
        "format": DATASET_FORMAT,
        "name": settings.name or f"rank-distillm-{names['teacher']}-{names['first_stage']}",
        "pipeline_version": __version__,
        **names,
        **{key: provenance.get(key) for key in ("model", "prompt", "prompt_sha256", "window", "stride", "max_words")},
        "teacher_source": provenance.get("source"),
        "depth": provenance["depth"],
        "queries": n_queries,
        "rows": bounds[-1][1],
        "with_text": bool(settings.with_text),
        "license": settings.license,
        "dataset_id": dataset_id,
        "ir_datasets_id": ir_datasets_id(queries, settings.dataset_id),
        "sample_label": label,
        **{key: stats.get(key) for key in ("windows", "windows_repaired", "repair_rate", "ids_missing")},
        "repairs": stats.get("repairs", {}),
        "backend": backend.get("backend") if isinstance(backend, dict) else backend,
        "versions": provenance.get("versions", {}),
        "sources": {
            key: None if value is None else str(value)
            for key, value in (
                ("first_stage_run", settings.first_stage),
                ("teacher_run", settings.teacher),
                ("teacher_stats", settings.teacher_stats),
                ("queries", settings.queries),
                ("corpus", settings.corpus),
            )
        },
        "shards": [
            {"file": SHARD_PATTERN.format(index=i, count=len(bounds)), "rows": end - start}
            for i, (start, end) in enumerate(bounds)
        ],
    }
    files = file_names(metadata)
    return {**metadata, "lightning_ir_file": files["parquet"], "teacher_run_file": files["trec"]}
