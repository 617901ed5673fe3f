"""Re-ranking with the student: score each query's top `depth` candidates, sort by score.

    distillm rerank --backend cross-encoder --model OUT/model --run RUN --queries Q.tsv \\
        --corpus STORE --out student.run --batch-size 64

The run is read as the teacher reads it (`pipeline.contract.rerank_inputs.read_rerank_lists`:
every line and reference checked before the model loads, the lists on disk, memory one chunk of
queries) and written query by query (`pipeline.contract.run.RunWriter`). Pairs are scored in
batches of `batch_size`, longest first within a chunk of queries (so a batch holds pairs of
similar length and little padding), bf16 autocast on a GPU, fp32 on a CPU. The output run has
the re-ranked top `depth` (score = the student's score; ties keep first-stage order and are
nudged apart by one float step so scores strictly decrease), then the candidates below `depth`
in first-stage order with scores below the lowest student score. The stats JSON has pairs/s
(compare with the teacher's stats) and the model's provenance.

`rerank` shares its arguments with the teacher: `--batch-size` counts pairs per forward pass
(its default of 8 suits the LLM teacher; pass 32-64 on a CPU, 256 or more on a GPU), `--dtype`
is auto | bf16 | fp32, `--log` and the prompt/window options are not used.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contract.corpus import CorpusStore
from pipeline.contract.rerank_inputs import RunLists, read_rerank_lists
from pipeline.contract.run import RunWriter, run_frame
from pipeline.contract.run import stats_path as run_stats_path
from pipeline.infra.versions import STUDENT_PACKAGES, versions

log = logging.getLogger(__name__)

_CHUNK_QUERIES = 64  # queries whose pairs are tokenised and length-sorted together


@dataclass(frozen=True)
class StudentRerank:
    """One re-ranking of a run with a student checkpoint (`distillm rerank --backend cross-encoder`)."""

    model: str | None  # a cross-encoder checkpoint: a folder or hub id
    run: Path  # the run to re-rank
    queries: str  # a queries file or irds:<id>
    corpus: Path  # the corpus store
    out: Path  # the student's TREC run
    stats: Path | None = None  # default: OUT.stats.json
    tag: str = "student"
    depth: int = 100  # candidates re-ranked per query
    batch_size: int = 64  # pairs per forward pass
    dtype: str = "auto"  # auto (bf16 on a GPU, fp32 on a CPU) | bf16 | fp32
    max_queries: int = 0  # only the first N queries of the run (0: all)
    progress: bool = False


def score_queries(
    model,
    lists: Iterable[tuple[str, list[str]]],
    queries: dict[str, str],
    corpus: CorpusStore,
    batch_size: int,
    depth: int,
    bf16: bool = False,
    progress: bool = False,
) -> Iterator[tuple[str, list[str], np.ndarray]]:
    """(qid, candidates, the student's scores of the top `depth` in list order) of each query,
    in list order, a chunk of queries at a time (`lists` is iterated twice: counted, then scored)."""
    import torch
    from tqdm import tqdm

    from pipeline.student.model import passage_text

    device = model.head.weight.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    was_training = model.training
    model.eval()
    bar = tqdm(total=sum(min(depth, len(d)) for _, d in lists), desc="student", unit=" pairs", disable=not progress)
    items = iter(lists)
    while chunk := list(itertools.islice(items, _CHUNK_QUERIES)):
        doc_ids = [d for _, docs in chunk for d in docs[:depth]]
        texts = [passage_text(p.text, p.title) for p in corpus.passages(doc_ids)]
        encoded = model.pairs.encode([queries[q] for q, docs in chunk for _ in docs[:depth]], texts)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]), reverse=True)
        flat = np.empty(len(encoded), dtype=np.float64)
        with torch.inference_mode(), autocast:
            for start in range(0, len(order), batch_size):
                picked = order[start : start + batch_size]
                batch = {k: v.to(device) for k, v in model.pairs.collate([encoded[i] for i in picked]).items()}
                flat[picked] = model(**batch).float().cpu().numpy()
                bar.update(len(picked))
        offset = 0
        for qid, docs in chunk:
            n = min(depth, len(docs))
            yield qid, docs, flat[offset : offset + n]
            offset += n
    bar.close()
    model.train(was_training)


def score_lists(
    model,
    lists: dict[str, list[str]],
    queries: dict[str, str],
    corpus: CorpusStore,
    batch_size: int = StudentRerank.batch_size,
    depth: int = StudentRerank.depth,
    bf16: bool = False,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The student's score of each query's top `depth` candidates, in list order."""
    scored = score_queries(model, lists.items(), queries, corpus, batch_size, depth, bf16, progress)
    return {qid: scores for qid, _, scores in scored}


def student_order(docs: list[str], scores: np.ndarray, depth: int) -> tuple[list[str], list[float]]:
    """Docs by student score (ties: list order) then the rest; strictly decreasing run scores."""
    top = np.argsort(-scores, kind="stable")
    ranked = [docs[i] for i in top] + docs[depth:]
    values = [float(scores[i]) for i in top]
    for k in range(1, len(values)):  # a tie (rare in fp32) is nudged below its predecessor
        values[k] = min(values[k], float(np.nextafter(values[k - 1], -np.inf)))
    lowest = values[-1] if values else 0.0
    values += [lowest - k for k in range(1, len(docs) - len(top) + 1)]
    return ranked, values


def student_run(lists: dict[str, list[str]], scores: dict[str, np.ndarray], depth: int, tag: str) -> pd.DataFrame:
    """A run frame (RUN_COLUMNS) of the re-ranked lists with the student's scores."""
    qids, doc_ids, ranks, values = [], [], [], []
    for qid, docs in lists.items():
        ranked, scored = student_order(docs, scores[qid], depth)
        qids += [qid] * len(ranked)
        doc_ids += ranked
        ranks += range(1, len(ranked) + 1)
        values += scored
    return run_frame(qids, doc_ids, ranks, values, tag)


def resolve_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def use_bf16(dtype: str, device: str) -> bool:
    """auto: bf16 autocast on a GPU, fp32 on a CPU; or bf16/bfloat16, fp32/float32."""
    if dtype == "auto":
        return device.startswith("cuda")
    if dtype in ("bf16", "bfloat16"):
        return True
    if dtype in ("fp32", "float32"):
        return False
    raise ValueError(f"--dtype for the cross-encoder: auto | bf16 | fp32, not {dtype!r}")


def rerank_with_student(
    lists: dict[str, list[str]],
    queries: dict[str, str],
    corpus: CorpusStore,
    model_dir: str | Path,
    batch_size: int = StudentRerank.batch_size,
    depth: int = StudentRerank.depth,
    device: str | None = None,
    dtype: str = "auto",
    progress: bool = False,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Each query's top `depth` re-ranked by the cross-encoder in model_dir (the rest after it), and stats.

    Stats: queries, pairs, seconds (scoring only), pairs_per_second, device, precision,
    batch_size, depth and the model's settings and provenance.
    """
    from pipeline.student.checkpoint import load_cross_encoder

    device = resolve_device(device)
    bf16 = use_bf16(dtype, device)
    model = load_cross_encoder(model_dir).to(device)
    started = time.perf_counter()
    scores = score_lists(model, lists, queries, corpus, batch_size, depth, bf16, progress)
    seconds = time.perf_counter() - started
    pairs = sum(len(s) for s in scores.values())
    stats = scoring_stats(model, model_dir, len(lists), pairs, seconds, bf16, batch_size, depth)
    return {qid: student_order(docs, scores[qid], depth)[0] for qid, docs in lists.items()}, stats


def scoring_stats(
    model, model_source: str | Path, queries: int, pairs: int, seconds: float, bf16: bool, batch_size: int, depth: int
) -> dict[str, Any]:
    """How a re-ranking went: its size, speed, device and precision, and the model's settings and provenance."""
    from pipeline.student.checkpoint import read_provenance

    return {
        "queries": queries,
        "pairs": pairs,
        "seconds": round(seconds, 3),
        "pairs_per_second": round(pairs / seconds, 1) if seconds > 0 else None,
        "device": str(model.head.weight.device),
        "precision": "bf16" if bf16 else "fp32",
        "batch_size": batch_size,
        "depth": depth,
        "model": {"path": str(model_source), **model.settings, "provenance": read_provenance(model_source)},
    }


def rerank_run_with_student(job: StudentRerank, model=None, bf16: bool | None = None) -> dict[str, Any]:
    """Re-rank `job.run` with the student and write the run and its stats; returns the stats.

    The inputs are read and checked first; then the checkpoint `job.model` is loaded (on a GPU
    when there is one), unless `model` (with `bf16`) is given: a model already in memory
    (`distillm train --rerank-run`), named `job.model` in the stats.
    """
    if model is None and not job.model:
        raise ValueError(
            "--model (a cross-encoder checkpoint: a folder or hub id, e.g. webis/monoelectra-base) is required "
            "for backend cross-encoder"
        )
    job.out.parent.mkdir(parents=True, exist_ok=True)
    spill = job.out.with_name(job.out.name + ".lists.tmp")
    lists, queries, corpus = read_rerank_lists(job.run, job.queries, job.corpus, spill, job.max_queries)
    with lists:  # bad input failed above, before the model loads
        if model is None:
            from pipeline.student.checkpoint import load_cross_encoder

            device = resolve_device(None)
            model = load_cross_encoder(job.model).to(device)
            bf16 = use_bf16(job.dtype, device)
        return write_student_run(model, job, lists, queries, corpus, bool(bf16))


def write_student_run(
    model, job: StudentRerank, lists: RunLists, queries: dict[str, str], corpus: CorpusStore, bf16: bool
) -> dict[str, Any]:
    """Re-rank `lists` with a loaded cross-encoder, writing the run query by query, and its stats."""
    started_at = time.time()
    started = time.perf_counter()
    pairs = 0
    with RunWriter(job.out, job.tag) as writer:
        for qid, docs, scores in score_queries(
            model, lists, queries, corpus, job.batch_size, job.depth, bf16, job.progress
        ):
            writer.write(qid, *student_order(docs, scores, job.depth))
            pairs += len(scores)
    seconds = time.perf_counter() - started
    stats = {
        **scoring_stats(model, job.model, len(lists), pairs, seconds, bf16, job.batch_size, job.depth),
        "candidates": lists.candidates,
        "provenance": {
            "backend": "cross-encoder",
            "run": str(job.run),
            "queries_file": str(job.queries),
            "corpus": str(job.corpus),
            "tag": job.tag,
            "versions": versions(STUDENT_PACKAGES),
            "command": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
        },
    }
    stats_path = job.stats or run_stats_path(job.out)
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(json.dumps(stats, indent=2, default=str) + "\n")
    log.info(
        "student run -> %s (%d pairs, %.0f pairs/s); stats -> %s",
        job.out,
        pairs,
        stats["pairs_per_second"] or 0,
        stats_path,
    )
    return stats
