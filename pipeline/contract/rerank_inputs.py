"""What every re-ranker reads: a run's ranked lists, checked against the queries and the corpus store.

The teacher and the student (`distillm rerank`, either backend) read their inputs the same way,
`read_rerank_lists`: the run is read one query at a time (`pipeline.contract.run.iter_run`),
every line checked, every query it names must be in the queries and every passage in the corpus
store (`RunReferences`: the one reference check, the error naming the first bad line, queries
before passages), and the ranked lists go to a file, one line per query (`qid doc doc ...`),
which `RunLists` iterates as often as needed. Memory: one query and one batch of doc ids, not
the run. A run whose queries are not contiguous is read whole instead (`read_rerank_inputs`).
Nothing is read twice: a bad run line is reported before a bad queries file or store.

    with read_rerank_lists(run_path, queries_spec, corpus_path, spill=out_dir / "x.lists")[0] as lists:
        for qid, doc_ids in lists: ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract.corpus import CorpusStore
from pipeline.contract.queries import load_queries
from pipeline.contract.run import DOC_ID, LINE, QID, NotGrouped, iter_run, ranked_lists, read_trec_run
from pipeline.infra.errors import InputError, naming_the_file

log = logging.getLogger(__name__)

Lists = dict[str, list[str]]
_CHECK_HITS = 100_000  # doc ids looked up in the corpus store at once


class RunReferences:
    """The one reference check: the first unknown query and passage of a run (by line) and how
    many there are. Queries are added one at a time, in any order; `raise_first` names the first."""

    def __init__(self, run_path: str | Path, queries: dict[str, str] | None, corpus: CorpusStore | None):
        self.run_path, self.queries, self.corpus = run_path, queries, corpus
        self.unknown_queries: set[str] = set()
        self.first_unknown_query: tuple[int, str] | None = None
        self.missing_docs: set[str] = set()
        self.first_missing_doc: tuple[int, str] | None = None
        self.pending: list[tuple[Sequence[str], Sequence[int]]] = []
        self.pending_hits = 0

    def add(self, qid: str, doc_ids: Sequence[str], lines: Sequence[int]) -> None:
        """One query's hits and the line of each."""
        if self.queries is not None and qid not in self.queries:
            self.unknown_queries.add(qid)
            first = (min(lines), qid)
            if self.first_unknown_query is None or first < self.first_unknown_query:
                self.first_unknown_query = first
        if self.corpus is not None:
            self.pending.append((doc_ids, lines))
            self.pending_hits += len(doc_ids)
            if self.pending_hits >= _CHECK_HITS:
                self._check_pending()

    def _check_pending(self) -> None:
        doc_ids = [d for docs, _ in self.pending for d in docs]
        lines = [n for _, numbers in self.pending for n in numbers]
        _, found = self.corpus.rows_of(doc_ids)
        if not found.all():
            missing = [(line, d) for d, line, ok in zip(doc_ids, lines, found, strict=True) if not ok]
            self.missing_docs.update(d for _, d in missing)
            first = min(missing)
            if self.first_missing_doc is None or first < self.first_missing_doc:
                self.first_missing_doc = first
        self.pending, self.pending_hits = [], 0

    def raise_first(self) -> None:
        """InputError for the first unknown query, else the first unknown passage (each with a count)."""
        if self.pending:
            self._check_pending()
        if self.first_unknown_query is not None:
            line, qid = self.first_unknown_query
            n = len(self.unknown_queries)
            raise InputError(self.run_path, line, f"query {qid!r} is not in the queries ({n} unknown queries)")
        if self.first_missing_doc is not None:
            line, doc_id = self.first_missing_doc
            n = len(self.missing_docs)
            raise InputError(self.run_path, line, f"doc {doc_id!r} is not in the corpus ({n} unknown doc ids)")


def check_run_references(
    run: pd.DataFrame, run_path: str | Path, queries: dict[str, str] | None = None, corpus: CorpusStore | None = None
) -> None:
    """`RunReferences` over a run frame: InputError at the first run line whose query or passage
    is unknown (with counts)."""
    references = RunReferences(run_path, queries, corpus)
    codes, qids = pd.factorize(run[QID], sort=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0, True]) if len(order) else np.zeros(1, dtype=int)
    doc_ids, lines = run[DOC_ID].to_numpy()[order], run[LINE].to_numpy()[order]
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        references.add(qids[codes[order[lo]]], doc_ids[lo:hi].tolist(), lines[lo:hi].tolist())
    references.raise_first()


def read_rerank_inputs(
    run_path: str | Path,
    queries_spec: str | Path,
    corpus_path: str | Path,
    max_queries: int = 0,
) -> tuple[pd.DataFrame, Lists, dict[str, str], CorpusStore]:
    """The run read whole, its ranked lists, the queries and the corpus store: what
    `read_rerank_lists` gives for a run whose queries are not contiguous.

    Keeps the first `max_queries` queries of the run (0: all) and cuts the run to them; every
    query and passage it names is checked (InputError at the first bad line) before any model loads.
    """
    run = read_trec_run(run_path)
    queries = load_queries(queries_spec)
    corpus = CorpusStore(corpus_path)
    run, lists = _checked_lists(run, run_path, queries, corpus, max_queries)
    return run, lists, queries, corpus


def _checked_lists(
    run: pd.DataFrame, run_path: str | Path, queries: dict[str, str], corpus: CorpusStore | None, max_queries: int
) -> tuple[pd.DataFrame, Lists]:
    """The first `max_queries` ranked lists of a run frame (0: all), the run cut to them, checked."""
    lists = ranked_lists(run)
    if max_queries:
        lists = dict(list(lists.items())[:max_queries])
    run = run[run[QID].isin(lists.keys())]
    check_run_references(run, run_path, queries, corpus)
    return run, lists


class RunLists:
    """Ranked lists in a file, `qid doc doc ...` per line, in run order; iterable again and again."""

    def __init__(self, path: str | Path, queries: int, candidates: int):
        self.path, self.queries, self.candidates = Path(path), queries, candidates

    @classmethod
    def of_file(cls, path: str | Path) -> RunLists:
        """The lists of a file written by `write_run_lists` (counted)."""
        lists = cls(path, 0, 0)
        for _, doc_ids in lists:
            lists.queries += 1
            lists.candidates += len(doc_ids)
        return lists

    def __iter__(self) -> Iterator[tuple[str, list[str]]]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                qid, *doc_ids = line.split()
                yield qid, doc_ids

    def __len__(self) -> int:
        return self.queries

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLists:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_run_lists(lists: Iterator[tuple[str, list[str]]], path: str | Path) -> RunLists:
    """Ranked lists (qid, doc ids) into a RunLists file."""
    queries = candidates = 0
    with naming_the_file(path), open(path, "w", encoding="utf-8") as f:
        for qid, doc_ids in lists:
            f.write(f"{qid} {' '.join(doc_ids)}\n")
            queries += 1
            candidates += len(doc_ids)
    return RunLists(path, queries, candidates)


def read_run_lists(
    run_path: str | Path,
    queries: dict[str, str],
    corpus: CorpusStore | None,
    spill: str | Path,
    max_queries: int = 0,
    keep: Callable[[int, str], bool] | None = None,
) -> RunLists:
    """The run's ranked lists in the file `spill`, every line and reference checked first.

    Keeps the first `max_queries` queries of the run (0: all); of those, only the ones for
    which keep(position, qid) is true go into the file (a shard), but all are checked.
    """
    run_path, spill = Path(run_path), Path(spill)
    spill.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _read_streaming(run_path, queries, corpus, spill, max_queries, keep)
    except NotGrouped as e:
        spill.unlink(missing_ok=True)
        _, lists = _checked_lists(read_trec_run(run_path), run_path, queries, corpus, max_queries)
        log.warning("%s: the run is read whole (its memory grows with its size)", e)
        kept = ((q, d) for p, (q, d) in enumerate(lists.items()) if keep is None or keep(p, q))
        return write_run_lists(kept, spill)
    except BaseException:
        spill.unlink(missing_ok=True)
        raise


def _read_streaming(
    run_path: Path,
    queries: dict[str, str],
    corpus: CorpusStore | None,
    spill: Path,
    max_queries: int,
    keep: Callable[[int, str], bool] | None,
) -> RunLists:
    references = RunReferences(run_path, queries, corpus)
    kept = 0

    def lists() -> Iterator[tuple[str, list[str]]]:
        nonlocal kept
        for query in iter_run(run_path):  # every line is checked, also past max_queries
            if max_queries and kept >= max_queries:
                continue
            references.add(query.qid, query.doc_ids, query.lines)
            if keep is None or keep(kept, query.qid):
                yield query.qid, query.doc_ids
            kept += 1

    result = write_run_lists(lists(), spill)
    references.raise_first()
    return result


def read_rerank_lists(
    run_path: str | Path,
    queries_spec: str | Path,
    corpus_path: str | Path,
    spill: str | Path,
    max_queries: int = 0,
    keep: Callable[[int, str], bool] | None = None,
) -> tuple[RunLists, dict[str, str], CorpusStore]:
    """What a re-ranker reads (see the module docstring), the lists on disk in `spill`:
    (lists, queries, corpus store). A bad run line is reported before a bad queries file or store."""
    try:
        queries, corpus = load_queries(queries_spec), CorpusStore(corpus_path)
    except InputError:
        _check_lines(Path(run_path))  # the run is read first, as read_rerank_inputs does
        raise
    return read_run_lists(run_path, queries, corpus, spill, max_queries, keep), queries, corpus


def _check_lines(run_path: Path) -> None:
    """Raise the run's first bad line, if any."""
    try:
        for _ in iter_run(run_path):
            pass
    except NotGrouped:
        read_trec_run(run_path)
