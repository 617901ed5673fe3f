"""Shared fixtures: the real TREC DL data (never copied into the repo).

It is read from `data/shared/data`, the link `distillm data fetch` makes (run by `make test`) to
`../shared` or to the download cache; without the link from `../shared/data`;
`DISTILLM_SHARED_DATA=DIR` overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    if os.environ.get("DISTILLM_SHARED_DATA"):
        return Path(os.environ["DISTILLM_SHARED_DATA"]).resolve()
    linked = REPO / "data" / "shared" / "data"
    return (linked if linked.is_dir() else REPO.parent / "shared" / "data").resolve()


SHARED_DATA = _shared_data()  # the data root's data/; the teachers' reference runs are in ../reference
TREC_DL = SHARED_DATA / "trec-dl"

# Nothing here may reach a model hub or collect analytics.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def trec_dl() -> Path:
    if not TREC_DL.is_dir():
        pytest.fail(f"TREC DL data not found at {TREC_DL} (run `distillm data fetch`, or set DISTILLM_SHARED_DATA)")
    return TREC_DL


@pytest.fixture(scope="session")
def dl_store(trec_dl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Corpus store + queries + runs ingested from the DL19 and DL20 candidate files."""
    from pipeline.ingestion import ingest_candidates

    out = tmp_path_factory.mktemp("dl")
    ingest_candidates([trec_dl / "retrieve_results_dl19.json", trec_dl / "retrieve_results_dl20.json"], out)
    return out


# ------------------------------------------------------------------ no test can hang the run
# pytest-timeout (pyproject: `timeout`, signal method) fails a test that runs too long and the
# session goes on, but its SIGALRM handler runs only when the main thread is back in Python.
# A test stuck inside C code (a JVM call, a C++ extension holding the GIL) never gets there, so
# BACKSTOP_SECONDS after that timeout faulthandler, a C thread of its own, prints every
# thread's stack and ends pytest (exit status 1).
BACKSTOP_SECONDS = 60
_STDERR = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STDERR] = os.dup(2)  # the terminal's stderr (outside any capture) for the stacks


def pytest_unconfigure(config: pytest.Config) -> None:
    os.close(config.stash[_STDERR])


def _test_timeout(item: pytest.Item) -> float:
    """The timeout pytest-timeout applies to item: its `timeout` mark, else --timeout, else the ini value."""
    mark = item.get_closest_marker("timeout")
    if mark is not None and (mark.args or "timeout" in mark.kwargs):
        return float(mark.args[0] if mark.args else mark.kwargs["timeout"] or 0)
    return float(item.config.getoption("timeout", None) or item.config.getini("timeout") or 0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item):
    import faulthandler

    timeout = _test_timeout(item)
    if timeout > 0:
        faulthandler.dump_traceback_later(timeout + BACKSTOP_SECONDS, exit=True, file=item.config.stash[_STDERR])
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()
