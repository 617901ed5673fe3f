"""Shared fixtures: the real TREC DL data in ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTILLM_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
TREC_DL = SHARED_DATA / "trec-dl"

# Nothing here may reach a model hub or collect analytics.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def trec_dl() -> Path:
    if not TREC_DL.is_dir():
        pytest.fail(f"shared TREC DL data not found at {TREC_DL} (set DISTILLM_SHARED_DATA)")
    return TREC_DL


@pytest.fixture(scope="session")
def dl_store(trec_dl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Corpus store + queries + runs ingested from the DL19 and DL20 candidate files."""
    from pipeline.ingest import ingest_candidates

    out = tmp_path_factory.mktemp("dl")
    ingest_candidates([trec_dl / "retrieve_results_dl19.json", trec_dl / "retrieve_results_dl20.json"], out)
    return out
