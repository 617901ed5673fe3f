"""Session fixtures for the first stages: one JVM per test session, indexes shared.

- `dl_index`: BM25 index of the 9,658 TREC DL 2019 + 2020 candidate passages (`dl_store`).
- `dl_runs`: BM25 top-100 over that index for the DL19 (43) and DL20 (200) topics.
- `scifact`: BEIR SciFact test collection built from the allenai CSVs (5,183 abstracts,
  300 claims with BEIR test qrels) in the data contract, with a BM25 index.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

DL_TOPICS = {"dl19": "topics.dl19-passage.txt", "dl20": "topics.dl20.txt"}


@pytest.fixture(scope="session")
def dl_index(dl_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.first_stage.bm25 import build_index

    index = tmp_path_factory.mktemp("bm25") / "dl-index"
    build_index(dl_store / "corpus", index, progress=False)
    return index


@pytest.fixture(scope="session")
def dl_runs(dl_index: Path, trec_dl: Path) -> dict[str, tuple[pd.DataFrame, dict]]:
    """{"dl19"|"dl20": (run, stats)} with the default settings (k=100, k1=0.9, b=0.4)."""
    from pipeline.contract.queries import read_queries
    from pipeline.first_stage.bm25 import retrieve

    return {
        year: retrieve(dl_index, read_queries(trec_dl / topics), progress=False) for year, topics in DL_TOPICS.items()
    }


@dataclass
class SciFact:
    corpus_jsonl: Path
    store: Path
    index: Path
    queries: dict[str, str]
    qrels: pd.DataFrame


@pytest.fixture(scope="session")
def scifact(trec_dl: Path, tmp_path_factory: pytest.TempPathFactory) -> SciFact:
    """BEIR SciFact: corpus_train.csv (doc_id, title, abstract as a Python list of sentences)
    -> JSONL with title -> corpus store -> BM25 index; the 300 test claims of BEIR are the
    claim ids of claims_validation.csv (several rows per claim, one text)."""
    from pipeline.contract.corpus import build_corpus_store, iter_passages
    from pipeline.first_stage.bm25 import build_index

    root = trec_dl.parent / "scifact"  # beside trec-dl in the shared data
    if not root.is_dir():
        pytest.fail(f"shared SciFact data not found at {root} (set DISTILLM_SHARED_DATA)")
    out = tmp_path_factory.mktemp("scifact")
    with zipfile.ZipFile(root / "scifact.zip") as archive:
        corpus_rows = _csv_rows(archive, "corpus_train.csv")
        claims = {row["id"]: row["claim"] for row in _csv_rows(archive, "claims_validation.csv")}
    corpus_jsonl = out / "corpus.jsonl"
    with open(corpus_jsonl, "w", encoding="utf-8") as f:
        for row in corpus_rows:
            text = " ".join(ast.literal_eval(row["abstract"]))  # BEIR joins the sentences with spaces
            f.write(json.dumps({"doc_id": row["doc_id"], "title": row["title"], "text": text}) + "\n")
    build_corpus_store(iter_passages(corpus_jsonl), out / "corpus", source=str(corpus_jsonl), progress=False)
    judged = json.loads((root / "qrels_scifact_beir_test.json").read_text())
    qrels = pd.DataFrame(
        [(qid, doc_id, int(rel)) for qid, docs in judged.items() for doc_id, rel in docs.items()],
        columns=["qid", "doc_id", "relevance"],
    )
    index = out / "index"
    build_index(out / "corpus", index, progress=False)
    return SciFact(corpus_jsonl, out / "corpus", index, {qid: claims[qid] for qid in judged}, qrels)


def _csv_rows(archive: zipfile.ZipFile, name: str) -> list[dict[str, str]]:
    with archive.open(name) as f:
        return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))
