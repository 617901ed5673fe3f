"""`distillm export`: the teacher's rankings joined with the first stage, as Parquet shards.

    distillm export --first-stage FS.run --teacher T.run --teacher-stats T.run.stats.json \\
        --queries Q.tsv [--corpus STORE --with-text] --out DIR

Only the teacher's re-ranked top `depth` of each query goes in (depth from the stats'
provenance); every kept (qid, doc_id) must be in the first-stage run, every query in the
queries, and with a corpus every doc in the corpus, or InputError names the teacher run's
line. Rows are ordered by query (teacher-run order), then teacher rank. DIR gets:

    data/train-0000i-of-0000N.parquet   queries are never split across shards
    metadata.json                       also in each shard's schema metadata (key b"distillm")
    README.md                           the dataset card (pipeline.dataset.card)
    __{teacher}-{first stage}-{label}-sampled-{depth}__{dataset id}.run   for lightning-ir

Both runs are held in memory (peak RSS about 1 GB for two 1M-line runs, mostly the
reader's); passage text is fetched from the memory-mapped corpus store one chunk of rows
at a time, so the corpus never is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import __version__
from pipeline.dataset import DATASET_FORMAT, METADATA_KEY, SHARD_PATTERN, dataset_schema
from pipeline.errors import InputError

log = logging.getLogger(__name__)
_CHUNK_ROWS = 65_536  # rows per Parquet row group: bounds the passage text held at once


def ranking_positions(run: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a run in ranking order: (row order, 1-based position of each in its query).

    Query codes number queries by first appearance in the file; within a query the order
    is the data contract's: rank, then higher score, then file order.
    """
    codes = pd.factorize(run["qid"], sort=False)[0]
    order = np.lexsort((np.arange(len(run)), -run["score"].to_numpy(), run["rank"].to_numpy(), codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    position = np.arange(len(order)) - np.repeat(starts, sizes) + 1
    return order, position


def teacher_rows(
    teacher: pd.DataFrame, teacher_path: Path, first_stage: pd.DataFrame, first_stage_path: Path, depth: int
) -> pd.DataFrame:
    """The teacher's top `depth` per query with the first stage's rank and score of each doc."""
    order, position = ranking_positions(teacher)
    keep = order[position <= depth]
    rows = pd.DataFrame(
        {
            "qid": teacher["qid"].to_numpy()[keep],
            "doc_id": teacher["doc_id"].to_numpy()[keep],
            "teacher_rank": position[position <= depth].astype(np.int32),
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
    rows["first_stage_rank"] = fs_rank[found]
    rows["first_stage_score"] = first_stage["score"].to_numpy()[found]
    return rows


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


def teacher_run_name(teacher: str, first_stage: str, label: str, depth: int, dataset_id: str) -> str:
    """Lightning-IR's name for a published run, e.g. __rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run"""
    return f"__{teacher}-{first_stage}-{label}-sampled-{depth}__{dataset_id.replace('/', '-')}.run"


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


def export_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """Write the dataset directory described in the module docstring; returns its metadata."""
    from pipeline.dataset.card import write_card
    from pipeline.io.corpus import CorpusStore
    from pipeline.io.sources import load_queries
    from pipeline.io.trec import read_trec_run, write_trec_run

    if args.with_text and args.corpus is None:
        raise ValueError("--with-text needs --corpus")
    stats, provenance = _stats_provenance(args.teacher_stats)
    teacher, first_stage = read_trec_run(args.teacher), read_trec_run(args.first_stage)
    if teacher.empty:
        raise InputError(args.teacher, None, "teacher run is empty")
    n_queries = teacher["qid"].nunique()
    if isinstance(stats.get("queries"), int) and stats["queries"] != n_queries:
        raise InputError(
            args.teacher_stats, None, f"stats describe {stats['queries']} queries, {args.teacher} has {n_queries}"
        )
    rows = teacher_rows(teacher, args.teacher, first_stage, args.first_stage, provenance["depth"])
    names = {
        "first_stage": args.first_stage_name or str(first_stage["tag"].iloc[0]),
        "teacher": args.teacher_name or str(teacher["tag"].iloc[0]),
    }
    for what, name in names.items():  # they name files and tag a TREC run
        if not re.fullmatch(r"[\w.+-]+", name):
            raise ValueError(f"{what} name {name!r}: use letters, digits, '.', '+', '-', '_' only")
    del teacher, first_stage
    queries = load_queries(args.queries)
    corpus = None if args.corpus is None else CorpusStore(args.corpus)
    _check_references(rows, args, queries, corpus)

    sizes = rows.groupby("qid", sort=False).size().to_numpy()
    bounds = shard_bounds(sizes, args.shard_rows)
    metadata = build_metadata(args, stats, provenance, names, len(sizes), bounds)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / "metadata.json").exists():
        raise InputError(out, None, "exists and is not a dataset export; refusing to overwrite it")
    tmp = out.with_name(out.name + ".tmp")  # built aside and renamed: never a half-written dataset
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    rows["query"] = rows["qid"].map(queries)
    rows["teacher_score"] = (provenance["depth"] - rows["teacher_rank"] + 1).astype(np.float32)
    write_shards(rows, metadata, tmp, corpus if args.with_text else None)
    run = pd.DataFrame(
        {
            "qid": rows["qid"].astype(object),  # object, not Arrow strings: write_trec_run iterates them
            "doc_id": rows["doc_id"].astype(object),
            "rank": rows["teacher_rank"],
            "score": rows["teacher_score"].astype(np.float64),
            "tag": pd.Series(names["teacher"], index=rows.index, dtype=object),
        }
    )
    write_trec_run(run, tmp / metadata["teacher_run_file"])
    (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    write_card(tmp, metadata)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return metadata


def _check_references(rows: pd.DataFrame, args: argparse.Namespace, queries: dict[str, str], corpus) -> None:
    """Every kept query must have a text and, given a corpus, every kept doc a passage."""
    unknown = ~rows["qid"].isin(queries.keys())
    if unknown.any():
        first = rows[unknown].iloc[0]
        raise InputError(
            args.teacher, int(first["line"]), f"query {first['qid']!r} is not in the queries {args.queries}"
        )
    if corpus is not None:
        missing = set(corpus.missing(list(pd.unique(rows["doc_id"]))))
        if missing:
            first = rows[rows["doc_id"].isin(missing)].iloc[0]
            raise InputError(
                args.teacher,
                int(first["line"]),
                f"doc {first['doc_id']!r} is not in the corpus {args.corpus} ({len(missing)} unknown doc ids)",
            )


def build_metadata(
    args: argparse.Namespace,
    stats: dict[str, Any],
    provenance: dict[str, Any],
    names: dict[str, str],
    n_queries: int,
    bounds: list[tuple[int, int]],
) -> dict[str, Any]:
    """The dataset metadata: how it was made (teacher provenance), counts, repairs, shards."""
    queries = str(args.queries)
    dataset_id = args.dataset_id or (
        queries.removeprefix("irds:") if queries.startswith("irds:") else Path(queries).stem
    )
    label = args.sample_label or str(n_queries)
    backend = provenance.get("backend")
    return {
        "format": DATASET_FORMAT,
        "name": args.name or f"rank-distillm-{names['teacher']}-{names['first_stage']}",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pipeline_version": __version__,
        **names,
        **{key: provenance.get(key) for key in ("model", "prompt", "prompt_sha256", "window", "stride")},
        "depth": provenance["depth"],
        "queries": n_queries,
        "rows": bounds[-1][1],
        "with_text": bool(args.with_text),
        "license": args.license,
        "dataset_id": dataset_id,
        "sample_label": label,
        **{key: stats.get(key) for key in ("windows", "windows_repaired", "repair_rate", "ids_missing")},
        "repairs": stats.get("repairs", {}),
        "backend": backend.get("backend") if isinstance(backend, dict) else backend,
        "versions": provenance.get("versions", {}),
        "sources": {
            key: None if value is None else str(value)
            for key, value in (
                ("first_stage_run", args.first_stage),
                ("teacher_run", args.teacher),
                ("teacher_stats", args.teacher_stats),
                ("queries", args.queries),
                ("corpus", args.corpus),
            )
        },
        "teacher_run_file": teacher_run_name(
            names["teacher"], names["first_stage"], label, provenance["depth"], dataset_id
        ),
        "shards": [
            {"file": SHARD_PATTERN.format(index=i, count=len(bounds)), "rows": end - start}
            for i, (start, end) in enumerate(bounds)
        ],
    }


def write_shards(rows: pd.DataFrame, metadata: dict[str, Any], out: Path, corpus=None) -> None:
    """Write metadata["shards"] from rows (in order), a row group per chunk; text from corpus if given."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = dataset_schema(corpus is not None).with_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    names = {"first_stage": metadata["first_stage"], "teacher": metadata["teacher"]}
    start = 0
    for shard in metadata["shards"]:
        end = start + shard["rows"]
        with pq.ParquetWriter(out / shard["file"], schema) as writer:
            for lo in range(start, end, _CHUNK_ROWS):
                chunk = rows.iloc[lo : min(lo + _CHUNK_ROWS, end)]
                columns = {
                    field.name: pa.array(chunk[field.name], field.type)
                    for field in schema
                    if field.name in chunk.columns
                }
                columns.update({k: pa.repeat(v, len(chunk)).cast(pa.string()) for k, v in names.items()})
                if corpus is not None:
                    columns["text"] = pa.array([p.text for p in corpus.passages(list(chunk["doc_id"]))], pa.string())
                writer.write_table(pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema))
        start = end


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="teacher + first-stage runs -> Parquet dataset with card")
    p.add_argument("--first-stage", type=Path, required=True, help="first-stage TREC run the teacher re-ranked")
    p.add_argument("--teacher", type=Path, required=True, help="teacher TREC run (distillm rerank)")
    p.add_argument("--teacher-stats", type=Path, required=True, help="the teacher's stats JSON (provenance.depth ...)")
    p.add_argument("--queries", required=True, help="queries file or irds:<id>")
    p.add_argument("--corpus", type=Path, help="corpus store: checks doc ids; with --with-text adds a text column")
    p.add_argument("--with-text", action="store_true", help="add the passage text (MS MARCO's licence terms apply)")
    p.add_argument("--out", type=Path, required=True, help="output directory (replaced if it is an earlier export)")
    p.add_argument("--name", help="dataset name (default rank-distillm-TEACHER-FIRSTSTAGE)")
    p.add_argument("--shard-rows", type=int, default=1_000_000, help="rows per Parquet shard (whole queries)")
    p.add_argument("--first-stage-name", help="first stage name (default: the first-stage run's tag)")
    p.add_argument("--teacher-name", help="teacher name (default: the teacher run's tag)")
    p.add_argument("--dataset-id", help="ir_datasets id of the queries, for the run name (default: from --queries)")
    p.add_argument("--sample-label", help="query-sample label in the run name (default: the number of queries)")
    p.add_argument("--license", default="cc-by-nc-4.0", help="licence id for the card and Zenodo")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.shard_rows < 1:
        raise ValueError("--shard-rows must be positive")
    started = time.perf_counter()
    metadata = export_dataset(args)
    seconds = time.perf_counter() - started
    log.info(
        "dataset %s: %d queries, %d rows in %d shard(s) -> %s (%.1f s)",
        metadata["name"],
        metadata["queries"],
        metadata["rows"],
        len(metadata["shards"]),
        args.out,
        seconds,
    )
    return 0
