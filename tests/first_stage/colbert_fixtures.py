"""Session fixtures for the ColBERT (PLAID) tests, imported by test_colbert.py.

- `colbert_checkpoint`: the MiniLM ColBERT checkpoint in the colbertv2.0 layout (no
  ColBERTv2 weights can be downloaded here), built by the product's own builder.
- `colbert_subset`: a corpus store of the BM25 candidates of the first 6 DL19 queries
  (about 600 real passages): what the default test run can afford to encode three
  times (PLAID samples every passage of so small a collection for k-means, then encodes
  all of them again, and the exhaustive reference encodes them once more).
- `colbert_index`: its PLAID index, built through the CLI (`distillm index colbert`).
- `dl_queries`: the 97 DL19 + DL20 queries with candidates (queries.tsv of `dl_store`).
- `colbert_runs`: the default top-100 of `dl_queries` over the subset, searched twice.
- `exhaustive_top10`: exact MaxSim top-10 of `dl_queries` over the subset.

The extensions are compiled into TORCH_EXTENSIONS_DIR (the Makefile sets
`<repo>/.cache/torch_extensions`, as our module does when it is unset), so only the first
run on a machine pays for the compile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

SUBSET_QUERIES = 6
TORCH_THREADS = 2  # the CI machines have 2 cores


@pytest.fixture(scope="session", autouse=True)
def _torch_threads() -> None:
    import torch

    torch.set_num_threads(min(TORCH_THREADS, torch.get_num_threads()))


@pytest.fixture(scope="session")
def colbert_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.first_stage.colbert_checkpoint import build_minilm_colbert_checkpoint

    return build_minilm_colbert_checkpoint(tmp_path_factory.mktemp("checkpoint") / "minilm-colbert")


@pytest.fixture(scope="session")
def colbert_subset(dl_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.contract.corpus import CorpusStore, build_corpus_store
    from pipeline.contract.run import ranked_lists, read_trec_run

    lists = ranked_lists(read_trec_run(dl_store / "runs" / "retrieve_results_dl19.run"))
    doc_ids = list(dict.fromkeys(d for qid in list(lists)[:SUBSET_QUERIES] for d in lists[qid]))
    passages = CorpusStore(dl_store / "corpus").passages(doc_ids)
    out = tmp_path_factory.mktemp("colbert-subset") / "corpus"
    build_corpus_store(enumerate(passages, start=1), out, source=f"first {SUBSET_QUERIES} DL19 queries", progress=False)
    return out


@dataclass
class BuiltIndex:
    path: Path
    seconds: float


@pytest.fixture(scope="session")
def colbert_index(
    colbert_subset: Path, colbert_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> BuiltIndex:
    from pipeline.cli import main

    index = tmp_path_factory.mktemp("colbert-index") / "plaid"
    started = time.perf_counter()
    argv = ["index", "colbert", "--corpus", str(colbert_subset), "--checkpoint", str(colbert_checkpoint)]
    assert main([*argv, "--index", str(index), "--threads", str(TORCH_THREADS)]) == 0
    return BuiltIndex(index, time.perf_counter() - started)


@pytest.fixture(scope="session")
def dl_queries(dl_store: Path) -> dict[str, str]:
    from pipeline.contract.queries import read_queries

    return read_queries(dl_store / "queries.tsv")


@pytest.fixture(scope="session")
def colbert_runs(colbert_index: BuiltIndex, dl_queries: dict[str, str]) -> list[tuple[pd.DataFrame, dict]]:
    """Two searches of the same queries with the default settings."""
    from pipeline.first_stage.colbert import retrieve

    return [retrieve(colbert_index.path, dl_queries, progress=False) for _ in range(2)]


@pytest.fixture(scope="session")
def exhaustive_top10(
    colbert_checkpoint: Path, colbert_subset: Path, dl_queries: dict[str, str]
) -> dict[str, list[str]]:
    from pipeline.first_stage.colbert import exhaustive_search

    return exhaustive_search(colbert_checkpoint, colbert_subset, dl_queries, k=10)
