"""Re-ranking with the student: score each query's top `depth` candidates, sort by score.

    distillm rerank --backend cross-encoder --model OUT/model --run RUN --queries Q.tsv \\
        --corpus STORE --out student.run --batch-size 64

Pairs are scored in batches of `batch_size`, longest first within a chunk of queries (so a
batch holds pairs of similar length and little padding), bf16 autocast on a GPU, fp32 on a
CPU. The output run has the re-ranked top `depth` (score = the student's score; ties keep
first-stage order and are nudged apart by one float step so scores strictly decrease), then
the candidates below `depth` in first-stage order with scores below the lowest student score.
The stats JSON has pairs/s (compare with the teacher's stats) and the model's provenance.

`rerank` shares its arguments with the teacher: `--batch-size` counts pairs per forward pass
(its default of 8 suits the LLM teacher; pass 32-64 on a CPU, 256 or more on a GPU), `--dtype`
is auto | bf16 | fp32, `--log` and the prompt/window options are not used.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contract.corpus import CorpusStore
from pipeline.contract.run import RUN_COLUMNS

log = logging.getLogger(__name__)

_CHUNK_QUERIES = 64  # queries whose pairs are tokenised and length-sorted together


def score_lists(
    model,
    lists: dict[str, list[str]],
    queries: dict[str, str],
    corpus: CorpusStore,
    batch_size: int = 64,
    depth: int = 100,
    bf16: bool = False,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The student's score of each query's top `depth` candidates, in list order."""
    import torch
    from tqdm import tqdm

    from pipeline.student.model import passage_text

    device = model.head.weight.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    was_training = model.training
    model.eval()
    qids = list(lists)
    scores: dict[str, np.ndarray] = {}
    bar = tqdm(total=sum(min(depth, len(lists[q])) for q in qids), desc="student", unit=" pairs", disable=not progress)
    for lo in range(0, len(qids), _CHUNK_QUERIES):
        chunk = qids[lo : lo + _CHUNK_QUERIES]
        doc_ids = [d for q in chunk for d in lists[q][:depth]]
        texts = [passage_text(p.text, p.title) for p in corpus.passages(doc_ids)]
        encoded = model.pairs.encode([queries[q] for q in chunk for _ in lists[q][:depth]], texts)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]), reverse=True)
        flat = np.empty(len(encoded), dtype=np.float64)
        with torch.inference_mode(), autocast:
            for start in range(0, len(order), batch_size):
                picked = order[start : start + batch_size]
                batch = {k: v.to(device) for k, v in model.pairs.collate([encoded[i] for i in picked]).items()}
                flat[picked] = model(**batch).float().cpu().numpy()
                bar.update(len(picked))
        offset = 0
        for q in chunk:
            n = min(depth, len(lists[q]))
            scores[q] = flat[offset : offset + n]
            offset += n
    bar.close()
    model.train(was_training)
    return scores


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
    rows = []
    for qid, docs in lists.items():
        ranked, values = student_order(docs, scores[qid], depth)
        rows += [(qid, d, rank, v, tag, -1) for rank, (d, v) in enumerate(zip(ranked, values, strict=True), start=1)]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS)).astype({"rank": np.int64, "line": np.int64})


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


def score_with_student(
    lists: dict[str, list[str]],
    queries: dict[str, str],
    corpus: CorpusStore,
    model_dir: str | Path,
    batch_size: int = 64,
    depth: int = 100,
    device: str | None = None,
    dtype: str = "auto",
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The student's scores of each query's top `depth` (in list order), and stats."""
    from pipeline.student.checkpoint import load_cross_encoder, read_provenance

    device = resolve_device(device)
    bf16 = use_bf16(dtype, device)
    model = load_cross_encoder(model_dir).to(device)
    started = time.perf_counter()
    scores = score_lists(model, lists, queries, corpus, batch_size, depth, bf16, progress)
    seconds = time.perf_counter() - started
    pairs = sum(len(s) for s in scores.values())
    stats = {
        "queries": len(lists),
        "pairs": pairs,
        "seconds": round(seconds, 3),
        "pairs_per_second": round(pairs / seconds, 1) if seconds > 0 else None,
        "device": device,
        "precision": "bf16" if bf16 else "fp32",
        "batch_size": batch_size,
        "depth": depth,
        "model": {"path": str(model_dir), **model.settings, "provenance": read_provenance(model_dir)},
    }
    return scores, stats


def rerank_with_student(
    lists: dict[str, list[str]],
    queries: dict[str, str],
    corpus: CorpusStore,
    model_dir: str | Path,
    batch_size: int = 64,
    depth: int = 100,
    device: str | None = None,
    dtype: str = "auto",
    progress: bool = False,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Each query's top `depth` re-ranked by the cross-encoder in model_dir (the rest after it), and stats.

    Stats: queries, pairs, seconds (scoring only), pairs_per_second, device, precision,
    batch_size, depth and the model's settings and provenance.
    """
    scores, stats = score_with_student(lists, queries, corpus, model_dir, batch_size, depth, device, dtype, progress)
    return {qid: student_order(docs, scores[qid], depth)[0] for qid, docs in lists.items()}, stats


def write_student_run(
    model,
    model_source: str | Path,
    inputs: tuple[pd.DataFrame, dict[str, list[str]], dict[str, str], CorpusStore],
    sources: tuple[str | Path, str | Path, str | Path],
    out: Path,
    *,
    batch_size: int = 64,
    depth: int = 100,
    bf16: bool = False,
    tag: str = "student",
    progress: bool = False,
    stats_path: Path | None = None,
) -> dict[str, Any]:
    """Re-rank a run with a loaded cross-encoder and write the run and its stats (`OUT.stats.json`).

    `inputs` are `read_rerank_inputs(*sources)` (read and checked before any model loads), `sources`
    the run, queries and corpus they came from. What `distillm rerank --backend cross-encoder` and
    `distillm train --rerank-run` write.
    """
    from pipeline.contract.run import write_trec_run
    from pipeline.infra.versions import STUDENT_PACKAGES, versions
    from pipeline.student.checkpoint import read_provenance

    started_at = time.time()
    run, lists, queries, corpus = inputs
    run_path, queries_path, corpus_path = sources
    started = time.perf_counter()
    scores = score_lists(model, lists, queries, corpus, batch_size, depth, bf16, progress)
    seconds = time.perf_counter() - started
    pairs = sum(len(v) for v in scores.values())
    out.parent.mkdir(parents=True, exist_ok=True)
    write_trec_run(student_run(lists, scores, depth, tag), out)
    stats = {
        "queries": len(lists),
        "pairs": pairs,
        "seconds": round(seconds, 3),
        "pairs_per_second": round(pairs / seconds, 1) if seconds > 0 else None,
        "device": str(model.head.weight.device),
        "precision": "bf16" if bf16 else "fp32",
        "batch_size": batch_size,
        "depth": depth,
        "model": {"path": str(model_source), **model.settings, "provenance": read_provenance(model_source)},
        "candidates": len(run),
        "provenance": {
            "backend": "cross-encoder",
            "run": str(run_path),
            "queries_file": str(queries_path),
            "corpus": str(corpus_path),
            "tag": tag,
            "versions": versions(STUDENT_PACKAGES),
            "command": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
        },
    }
    stats_path = stats_path or out.with_name(out.name + ".stats.json")
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(json.dumps(stats, indent=2, default=str) + "\n")
    log.info(
        "student run -> %s (%d pairs, %.0f pairs/s); stats -> %s",
        out,
        pairs,
        stats["pairs_per_second"] or 0,
        stats_path,
    )
    return stats


def main_cross_encoder(args: argparse.Namespace) -> int:
    """`distillm rerank --backend cross-encoder`: the student's run and stats from the teacher's arguments."""
    from pipeline.contract.rerank_inputs import read_rerank_inputs
    from pipeline.student.checkpoint import load_cross_encoder

    if not args.model:
        raise ValueError(
            "--model (a cross-encoder checkpoint: a folder or hub id, e.g. webis/monoelectra-base) is required "
            "for backend cross-encoder"
        )
    sources = (args.run, args.queries, args.corpus)
    inputs = read_rerank_inputs(*sources, args.max_queries)  # bad input fails before the model loads
    device = resolve_device(None)
    model = load_cross_encoder(args.model).to(device)
    write_student_run(
        model,
        args.model,
        inputs,
        sources,
        args.out,
        batch_size=args.batch_size,
        depth=args.depth,
        bf16=use_bf16(args.dtype, device),
        tag=args.tag,
        progress=not args.no_progress,
        stats_path=args.stats,
    )
    return 0
