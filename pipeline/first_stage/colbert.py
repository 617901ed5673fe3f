"""ColBERTv2 first stage with colbert-ai's PLAID engine: corpus store -> PLAID index -> TREC run.

    distillm index colbert --corpus STORE --checkpoint CKPT --index DIR [--nbits 2 --doc-maxlen 180 --kmeans-niters 4]
    distillm retrieve colbert --index DIR --queries Q --out RUN [--k 100 --ncells 8
        --centroid-score-threshold 0.35 --ndocs 8192 --tag colbert]

(the commands: `pipeline.commands.index`, `pipeline.commands.retrieve`)

CKPT is a Hugging Face hub id (`colbert-ir/colbertv2.0`, fetched into the hub cache) or a
local checkpoint folder in that layout (`colbert_checkpoint.build_minilm_colbert_checkpoint`
builds one offline). Passage i of the index is row i of the corpus store (title + " " +
text when there is a title); `DIR/doc_ids.npy` maps it back to its doc id, so the index
does not need the store to search. colbert-ai runs in this process, never in a forked
child (`RunConfig(nranks=1, avoid_fork_if_possible=True)`): with transformers 5 a failing
child left colbert-ai's parent waiting forever. The index is built in DIR.tmp and renamed
into place; `DIR/distillm.json` records where it came from.

colbert-ai 0.2.22 needs two fixes to run beside vLLM (transformers 5, its CPU extensions):
`colbert_runtime.py`. Checkpoints are resolved and checked in `colbert_checkpoint.py`. Indexing
and search run under `pipeline.infra.watchdog`: if the process and its children (the C++
compiler) use almost no CPU for `--stall-timeout` seconds, the call fails with StallError
naming where it is stuck instead of hanging.

Search settings: colbert-ai picks ncells 2, centroid_score_threshold 0.45, ndocs 1024 for
k <= 100, which returned only ~64 passages per query with a weak encoder; our defaults
(8, 0.35, 8192) return k. PLAID keeps at most ndocs / 4 passages for exact scoring, so
ndocs must be at least 4 k. `RUN.stats.json` counts the queries that got fewer than k.
`exhaustive_search` ranks by exact MaxSim over every passage: the reference that PLAID
approximates, for checking settings on small collections.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract.corpus import CorpusStore
from pipeline.first_stage.colbert_checkpoint import check_checkpoint_loads, recorded_checkpoint, resolve_checkpoint
from pipeline.first_stage.colbert_runtime import (
    DocIds,
    StorePassages,
    compile_extensions,
    device_name,
    doc_ids_in_row_order,
    encode_each_passage_once,
    extensions_dir,
    runtime_versions,
    stale_lock_hint,
    torch_threads,
)
from pipeline.first_stage.index_folder import PROVENANCE, finish_index, read_provenance
from pipeline.first_stage.retrieval import Hits, check_k, check_run_names
from pipeline.infra.errors import InputError
from pipeline.infra.watchdog import STALL_SECONDS, run_with_watchdog

log = logging.getLogger(__name__)

INDEX_FORMAT = "distillm-colbert/1"
DOC_IDS = "doc_ids.npy"  # row i = doc id of PLAID passage id i
NBITS, DOC_MAXLEN, KMEANS_NITERS = 2, 180, 4  # ColBERTv2's MS MARCO setting (nbits 2, doc_maxlen 180)
NCELLS, CENTROID_SCORE_THRESHOLD, NDOCS = 8, 0.35, 8192  # return k=100 even with a weak encoder


# ------------------------------------------------------------------ indexing


def build_index(
    corpus: str | Path,
    index_dir: str | Path,
    checkpoint: str | Path,
    nbits: int = NBITS,
    doc_maxlen: int = DOC_MAXLEN,
    kmeans_niters: int = KMEANS_NITERS,
    threads: int | None = None,
    stall_seconds: float | None = STALL_SECONDS,
    progress: bool = True,
) -> dict:
    """Build a PLAID index of a corpus store in index_dir; returns the provenance record.

    Checks first (InputError, in seconds): the store, the checkpoint's files, loading it.
    Then colbert-ai's Indexer in this process: k-means centroids from a sample of passage
    embeddings, then every passage encoded and compressed to nbits per dimension. The
    index is built in DIR.tmp and renamed into place.
    """
    if nbits not in (1, 2, 4):
        raise ValueError(f"nbits must be 1, 2 or 4, got {nbits}")
    if doc_maxlen < 1 or kmeans_niters < 1:
        raise ValueError(f"doc_maxlen and kmeans_niters must be positive ({doc_maxlen}, {kmeans_niters})")
    store = CorpusStore(corpus)
    ckpt_path, ckpt_info = resolve_checkpoint(checkpoint)
    index_dir = Path(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_dir.with_name(index_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    threads = threads or torch_threads()

    def build() -> dict:
        import torch
        from colbert import Indexer
        from colbert.data import Collection
        from colbert.infra import ColBERTConfig, Run, RunConfig

        torch.set_num_threads(threads)
        model = check_checkpoint_loads(ckpt_path)
        dim, query_maxlen = model.colbert_config.dim, model.colbert_config.query_maxlen
        del model
        log.info("compiling or loading colbert-ai's C++ extensions (%s)", extensions_dir())
        compile_extensions()
        config = ColBERTConfig(nbits=nbits, doc_maxlen=doc_maxlen, kmeans_niters=kmeans_niters)
        collection = Collection(path=str(store.path.resolve()), data=StorePassages(store))
        log.info("indexing %d passages with %s (nbits %d, %d threads)", len(store), ckpt_path, nbits, threads)
        # Run settings (where the index goes) must sit in the run context: it overrides `config`.
        run_config = RunConfig(nranks=1, avoid_fork_if_possible=True, index_root=str(tmp.parent), root=str(tmp))
        with Run().context(run_config), encode_each_passage_once(len(store)):
            indexer = Indexer(checkpoint=str(ckpt_path), config=config, verbose=1 if progress else 0)
            indexer.index(name=tmp.name, collection=collection, overwrite="force_silent_overwrite")
        return {"dim": dim, "query_maxlen": query_maxlen}

    started = time.perf_counter()
    try:
        model_settings = run_with_watchdog(build, "colbert indexing", stall_seconds, hint=stale_lock_hint)
        colbert_meta = json.loads((tmp / "metadata.json").read_text())
        indexed = sum(
            json.loads((tmp / f"{i}.metadata.json").read_text())["num_passages"]
            for i in range(colbert_meta["num_chunks"])
        )
        if indexed != len(store):
            raise RuntimeError(f"colbert-ai indexed {indexed} of {len(store)} passages")
        np.save(tmp / DOC_IDS, doc_ids_in_row_order(store))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    provenance = {
        "format": INDEX_FORMAT,
        "corpus": str(store.path.resolve()),
        "corpus_source": store.meta.get("source"),
        "count": len(store),
        **ckpt_info,
        "settings": {
            "contents": "title + ' ' + text" if store.has_title else "text",
            "nbits": nbits,
            "doc_maxlen": doc_maxlen,
            "kmeans_niters": kmeans_niters,
            **model_settings,
            "partitions": colbert_meta["num_partitions"],
            "embeddings": colbert_meta["num_embeddings"],
            "avg_doclen": round(colbert_meta["avg_doclen"], 2),
            "threads": threads,
        },
        "device": device_name(),
        "seconds": round(seconds, 3),
        "passages_per_second": round(len(store) / seconds, 1),
        "versions": runtime_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    finish_index(tmp, index_dir, provenance)
    log.info("index %s: %d passages in %.1f s", index_dir, len(store), seconds)
    return provenance


# ------------------------------------------------------------------ retrieval


def check_index(index_dir: str | Path) -> dict:
    """The provenance of a PLAID index built by `build_index`; InputError (with a hint) for anything else."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise InputError(index_dir, None, "index directory not found")
    provenance = read_provenance(index_dir) or {}
    if provenance.get("format") != INDEX_FORMAT:
        if (index_dir / "store.json").exists():
            what = "it is a corpus store"
        elif any(index_dir.glob("segments_*")):
            what = "it is a Lucene (BM25) index"
        elif (index_dir / "metadata.json").exists():
            what = "a colbert-ai index built elsewhere: its passage ids cannot be mapped to doc ids"
        elif provenance:
            what = f"its {PROVENANCE} has format {provenance.get('format')!r}"
        else:
            what = f"no {PROVENANCE}"
        raise InputError(
            index_dir,
            None,
            f"not a ColBERT index ({what}); build one with "
            "`distillm index colbert --corpus STORE --checkpoint CKPT --index DIR`",
        )
    missing = [f for f in ("metadata.json", "centroids.pt", "ivf.pid.pt", DOC_IDS) if not (index_dir / f).exists()]
    if missing:
        raise InputError(index_dir, None, f"incomplete ColBERT index: missing {', '.join(missing)}")
    return provenance


def retrieve(
    index_dir: str | Path,
    queries: dict[str, str],
    k: int = 100,
    ncells: int = NCELLS,
    centroid_score_threshold: float = CENTROID_SCORE_THRESHOLD,
    ndocs: int = NDOCS,
    checkpoint: str | Path | None = None,
    tag: str = "colbert",
    batch_size: int = 128,
    threads: int | None = None,
    stall_seconds: float | None = STALL_SECONDS,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """PLAID top-k of every query: a run frame (RUN_COLUMNS, queries in input order) and stats.

    `checkpoint` defaults to the one the index was built with. Equal scores are ordered by
    passage id and separated by one float64 step, so scores strictly decrease with rank.
    Stats: queries, hits, queries with fewer than k hits (logged as a warning too),
    seconds, queries/s, settings, the index's provenance, versions.
    """
    check_k(k, batch_size)
    if ncells < 1 or ndocs < 4 * k:
        raise ValueError(
            f"need ncells >= 1 and ndocs >= 4 k (PLAID scores ndocs / 4 passages exactly): {ncells}, {ndocs}"
        )
    check_run_names(tag, queries)
    index_dir = Path(index_dir)
    provenance = check_index(index_dir)
    ckpt_path, ckpt_info = resolve_checkpoint(checkpoint or recorded_checkpoint(provenance))
    if ckpt_info["weights_sha256"] != provenance.get("weights_sha256"):
        log.warning(
            "%s is not the checkpoint %s was built with (weights differ): queries and passages are encoded by "
            "different models",
            ckpt_path,
            index_dir,
        )
    doc_ids = DocIds(index_dir / DOC_IDS)
    threads = threads or torch_threads()
    hits: dict[str, tuple[list[int], list[float]]] = {}

    def search() -> float:
        import torch
        from colbert import Searcher
        from colbert.data import Collection
        from colbert.infra import ColBERTConfig, Run, RunConfig

        torch.set_num_threads(threads)
        model = check_checkpoint_loads(ckpt_path)
        if model.colbert_config.dim != provenance["settings"]["dim"]:
            raise InputError(
                ckpt_path,
                None,
                f"checkpoint has dim {model.colbert_config.dim}, the index {provenance['settings']['dim']}",
            )
        del model
        compile_extensions()
        config = ColBERTConfig(ncells=ncells, centroid_score_threshold=centroid_score_threshold, ndocs=ndocs)
        with Run().context(RunConfig(nranks=1, avoid_fork_if_possible=True)):
            searcher = Searcher(
                index=index_dir.name,
                index_root=str(index_dir.parent),
                checkpoint=str(ckpt_path),
                collection=Collection(path=str(index_dir / DOC_IDS), data=doc_ids),  # unused by search
                config=config,
                verbose=0,
            )
        from tqdm import tqdm

        items = list(queries.items())
        started = time.perf_counter()
        with tqdm(total=len(items), desc="colbert", unit=" queries", disable=not progress) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                encoded = searcher.encode([text for _, text in chunk])
                for i, (qid, _) in enumerate(chunk):
                    pids, _, scores = searcher.dense_search(encoded[i : i + 1], k)
                    hits[qid] = (list(pids), list(scores))
                    bar.update(1)
        return time.perf_counter() - started

    seconds = run_with_watchdog(search, "colbert search", stall_seconds, hint=stale_lock_hint)
    found = Hits(k)
    for qid in queries:
        pids, values = hits[qid]
        order = sorted(range(len(pids)), key=lambda j: (-values[j], pids[j]))  # ties: by passage id
        found.add(qid, [doc_ids[pids[j]] for j in order], [float(values[j]) for j in order])
    short = found.short
    if short:
        log.warning(
            "%d of %d queries got fewer than %d hits (raise --ncells or --ndocs, or lower "
            "--centroid-score-threshold): %s",
            len(short),
            len(queries),
            k,
            ", ".join(short[:10]) + (" ..." if len(short) > 10 else ""),
        )
    stats = {
        **found.stats(len(queries), seconds, qids_with_fewer_than_k_hits=short, queries_without_hits=len(found.empty)),
        "settings": {
            "ncells": ncells,
            "centroid_score_threshold": centroid_score_threshold,
            "ndocs": ndocs,
            "batch_size": batch_size,
            "threads": threads,
            "tag": tag,
        },
        **{f"search_{key}": value for key, value in ckpt_info.items()},
        "device": device_name(),
        "index": str(index_dir.resolve()),
        "index_provenance": provenance,
        "versions": runtime_versions(),
    }
    return found.run(tag), stats


def exhaustive_search(
    checkpoint: str | Path,
    corpus: str | Path,
    queries: dict[str, str],
    k: int = 10,
    doc_maxlen: int = DOC_MAXLEN,
    batch_size: int = 64,
) -> dict[str, list[str]]:
    """Exact ColBERT: each query's top-k doc ids by MaxSim over every passage of a corpus store.

    The uncompressed token embeddings of colbert-ai's own `Checkpoint.docFromText` and
    `queryFromText` (what PLAID compresses and searches), scored against every passage: the
    reference that PLAID's candidate generation and nbits compression approximate. It
    encodes the whole corpus, so it is for checking PLAID settings on small collections.
    Ties are ordered by row, as in `retrieve`.
    """
    import torch
    from colbert.infra import ColBERTConfig
    from colbert.modeling.checkpoint import Checkpoint

    store = CorpusStore(corpus)
    path, _ = resolve_checkpoint(checkpoint)
    check_checkpoint_loads(path)
    compile_extensions()  # Checkpoint loads colbert-ai's segmented_maxsim extension
    model = Checkpoint(str(path), colbert_config=ColBERTConfig(doc_maxlen=doc_maxlen), verbose=0)
    texts = list(StorePassages(store))
    doc_ids = [d.decode("utf-8") for d in doc_ids_in_row_order(store)]
    embeddings, lengths = [], []
    with torch.inference_mode():
        for start in range(0, len(texts), 50 * batch_size):  # bounded memory, as colbert-ai's encoder
            D, doclens = model.docFromText(
                texts[start : start + 50 * batch_size], bsize=batch_size, keep_dims="flatten"
            )
            embeddings.append(D.float())
            lengths.extend(doclens)
        D, lengths_t = torch.cat(embeddings), torch.tensor(lengths)
        Q = model.queryFromText(list(queries.values()), bsize=128, to_cpu=True).float()
        ranking = {}
        for i, qid in enumerate(queries):
            token_scores = D @ Q[i].T  # passage tokens x query tokens
            scores = torch.segment_reduce(token_scores, "max", lengths=lengths_t, axis=0).sum(-1).numpy()
            order = np.lexsort((np.arange(len(scores)), -scores))[:k]  # by score, ties by row
            ranking[qid] = [doc_ids[j] for j in order]
    return ranking
