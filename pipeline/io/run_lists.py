"""A run's ranked lists kept on disk: read, checked and iterated query by query.

The teacher needs each query's candidates in ranking order, several times (checking them,
resuming from the reply log, running), and a paper-scale run is 100k-1M queries x 100
candidates. `read_run_lists` reads a TREC run one query at a time (`pipeline.io.run_stream`),
checks it as `pipeline.io.checks.read_rerank_inputs` does (every line; every query in the
queries and every passage in the corpus store, the error naming the first bad line, queries
before passages) and writes the lists to a file, one line per query (`qid doc doc ...`), which
`RunLists` iterates as often as needed. Memory: one query and one batch of doc ids, not the run.
A run whose queries are not contiguous is read whole instead (`read_trec_run`), as before.

    with read_run_lists(run_path, queries, corpus, spill=out_dir / "x.lists") as lists:
        for qid, doc_ids in lists: ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.infra.errors import InputError, naming_the_file
from pipeline.io.corpus import CorpusStore
from pipeline.io.run_stream import NotGrouped, QueryRun, iter_run

log = logging.getLogger(__name__)

_CHECK_HITS = 100_000  # doc ids looked up in the corpus store at once


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
    spill = Path(spill)
    try:
        return _read_streaming(Path(run_path), queries, corpus, spill, max_queries, keep)
    except NotGrouped as e:
        spill.unlink(missing_ok=True)
        return _read_whole(Path(run_path), queries, corpus, spill, max_queries, keep, e)
    except BaseException:
        spill.unlink(missing_ok=True)
        raise


class _References:
    """The first unknown query and passage of a run, in file order, and how many there are."""

    def __init__(self, run_path: Path, queries: dict[str, str], corpus: CorpusStore | None):
        self.run_path, self.queries, self.corpus = run_path, queries, corpus
        self.unknown_queries: set[str] = set()
        self.first_unknown_query: tuple[int, str] | None = None
        self.missing_docs: set[str] = set()
        self.first_missing_doc: tuple[int, str] | None = None
        self.pending: list[QueryRun] = []
        self.pending_hits = 0

    def add(self, query: QueryRun) -> None:
        if query.qid not in self.queries:
            self.unknown_queries.add(query.qid)
            if self.first_unknown_query is None:
                self.first_unknown_query = (query.first_line, query.qid)
        if self.corpus is not None:
            self.pending.append(query)
            self.pending_hits += len(query.doc_ids)
            if self.pending_hits >= _CHECK_HITS:
                self._check_pending()

    def _check_pending(self) -> None:
        doc_ids = [d for q in self.pending for d in q.doc_ids]
        lines = [n for q in self.pending for n in q.lines]
        _, found = self.corpus.rows_of(doc_ids)
        if not found.all():
            missing = [(line, d) for d, line, ok in zip(doc_ids, lines, found, strict=True) if not ok]
            self.missing_docs.update(d for _, d in missing)
            first = min(missing)
            if self.first_missing_doc is None or first < self.first_missing_doc:
                self.first_missing_doc = first
        self.pending, self.pending_hits = [], 0

    def raise_first(self) -> None:
        """InputError for the first unknown query, else the first unknown passage (as check_run_references)."""
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


def _read_streaming(
    run_path: Path,
    queries: dict[str, str],
    corpus: CorpusStore | None,
    spill: Path,
    max_queries: int,
    keep: Callable[[int, str], bool] | None,
) -> RunLists:
    references = _References(run_path, queries, corpus)
    kept = 0

    def lists() -> Iterator[tuple[str, list[str]]]:
        nonlocal kept
        for query in iter_run(run_path):  # every line is checked, also past max_queries
            if max_queries and kept >= max_queries:
                continue
            references.add(query)
            if keep is None or keep(kept, query.qid):
                yield query.qid, query.doc_ids
            kept += 1

    spill.parent.mkdir(parents=True, exist_ok=True)
    result = write_run_lists(lists(), spill)
    references.raise_first()
    return result


def _read_whole(
    run_path: Path,
    queries: dict[str, str],
    corpus: CorpusStore | None,
    spill: Path,
    max_queries: int,
    keep: Callable[[int, str], bool] | None,
    reason: NotGrouped,
) -> RunLists:
    """A run whose queries are not contiguous: read whole, as `read_rerank_inputs` does."""
    from pipeline.io.checks import check_run_references
    from pipeline.io.trec import ranked_lists, read_trec_run

    run = read_trec_run(run_path)
    lists = ranked_lists(run)
    if max_queries:
        lists = dict(list(lists.items())[:max_queries])
    check_run_references(run[run["qid"].isin(lists.keys())], run_path, queries, corpus)
    del run
    log.warning("%s: the run is read whole (its memory grows with its size)", reason)
    return write_run_lists(((q, d) for p, (q, d) in enumerate(lists.items()) if keep is None or keep(p, q)), spill)


def read_rerank_lists(
    run_path: str | Path,
    queries_spec: str | Path,
    corpus_path: str | Path,
    spill: str | Path,
    max_queries: int = 0,
    keep: Callable[[int, str], bool] | None = None,
) -> tuple[RunLists, dict[str, str], CorpusStore]:
    """What a re-ranker reads, as `pipeline.io.checks.read_rerank_inputs`, the lists on disk:
    (lists, queries, corpus store). A bad run line is reported before a bad queries file or store."""
    from pipeline.io.sources import load_queries

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
        from pipeline.io.trec import read_trec_run

        read_trec_run(run_path)
