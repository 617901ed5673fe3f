"""`irds:<id>` sources: corpora, queries and qrels read through ir_datasets (needs internet once).

`irds:msmarco-passage/trec-dl-2019/judged` names queries and qrels, and `irds:msmarco-passage`
the 8.8M-passage corpus. ir_datasets downloads on first use and caches under IR_DATASETS_HOME;
offline it can only read what is already there. Each artifact's module reads its own records
from here (`corpus.load_passages`, `queries.load_queries`, `qrels.load_qrels`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.infra.errors import InputError

IRDS_PREFIX = "irds:"


def is_irds(spec: str | Path) -> bool:
    """Whether a source names an ir_datasets id rather than a file."""
    return str(spec).startswith(IRDS_PREFIX)


def irds_dataset(spec: str) -> Any:
    """The ir_datasets dataset that `irds:<id>` names (InputError for an unknown id)."""
    try:
        import ir_datasets
    except ImportError:  # pragma: no cover - part of the standard environment
        raise InputError(spec, None, "ir_datasets is not installed (pip install ir_datasets)") from None
    try:
        return ir_datasets.load(spec.removeprefix(IRDS_PREFIX))
    except KeyError:
        raise InputError(spec, None, "unknown ir_datasets id (see https://ir-datasets.com)") from None


def irds_records(spec: str, what: str, records: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    """The records `records()` yields, a failed download (offline) turned into InputError naming `what`."""
    try:
        yield from records()
    except OSError as e:  # ir_datasets raises IOError when no download source works (offline)
        raise InputError(
            spec, None, f"cannot read {what} from ir_datasets ({e}); offline, place the files under IR_DATASETS_HOME"
        ) from None
