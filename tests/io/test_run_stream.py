"""A TREC run read one query at a time: the same rankings and errors as reading it whole."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from pipeline.infra.errors import InputError
from pipeline.io.run_stream import NotGrouped, RunWriter, iter_run, read_query
from pipeline.io.trec import ranked_lists, read_trec_run, run_from_lists, write_trec_run


def test_the_shared_run_query_by_query(trec_dl: Path):
    path = trec_dl / "run.bm25.dl19.top100.txt"
    queries = list(iter_run(path))
    assert {q.qid: q.doc_ids for q in queries} == ranked_lists(read_trec_run(path))
    assert [q.qid for q in queries] == list(ranked_lists(read_trec_run(path)))  # run order
    again = read_query(path, queries[7].offset, queries[7].end, queries[7].first_line)
    assert again == queries[7]


def test_ties_and_order_as_ranked_lists(tmp_path: Path):
    path = tmp_path / "r.run"
    path.write_text("q1 Q0 b 2 5.0 t\nq1 Q0 a 1 9.0 t\n\nq1 Q0 c 2 6.0 t\nq2 Q0 c 1 1.0 u\n")
    (q1, q2) = iter_run(path)
    assert (q1.doc_ids, q1.ranks, q1.lines, q1.first_line) == (["a", "c", "b"], [1, 2, 2], [2, 4, 1], 1)
    assert (q2.qid, q2.tags, q2.scores) == ("q2", ["u"], [1.0])
    assert {q.qid: q.doc_ids for q in (q1, q2)} == ranked_lists(read_trec_run(path))


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 2 0.5\n", 2, "expected 6 fields"),
        ("q1 Q0 d1 one 1.0 t\n", 1, "rank is not an integer"),
        ("q1 Q0 d1 1 high t\n", 1, "score is not a number"),
        ("q1 Q0 d1 1 nan t\n", 1, "score is not finite"),
        ("q1 Q0 d1 1 1.0 t\nq1 Q0 d1 3 0.2 t\n", 2, "already on line 1"),
        ("q1 Q0 d1 1 1.0 t\nq1 Q0 caf\xe9 2 0.5 t\n", 2, r"not valid UTF-8 \(byte 0xe9 at column 10\)"),
    ],
)
def test_bad_lines_are_named_as_read_trec_run_names_them(tmp_path: Path, content: str, line: int, message: str):
    path = tmp_path / "bad.run"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(InputError, match=message) as streamed:
        list(iter_run(path))
    with pytest.raises(InputError, match=message) as whole:
        read_trec_run(path)
    assert streamed.value.line == whole.value.line == line and str(streamed.value) == str(whole.value)


def test_a_query_that_comes_back_is_not_grouped(tmp_path: Path):
    path = tmp_path / "r.run"
    path.write_text("q1 Q0 d1 1 1.0 t\nq2 Q0 d1 1 1.0 t\nq1 Q0 d2 2 0.2 t\n")
    with pytest.raises(NotGrouped, match=r"r.run:3: query 'q1' \(first on line 1\) comes back"):
        list(iter_run(path))


@pytest.mark.parametrize("content", ["", "\n \n"])
def test_an_empty_run(tmp_path: Path, content: str):
    path = tmp_path / "empty.run"
    path.write_text(content)
    with pytest.raises(InputError, match="the run holds no rankings"):
        list(iter_run(path))
    assert list(iter_run(path, allow_empty=True)) == []


def test_the_writer_writes_what_write_trec_run_writes(tmp_path: Path, trec_dl: Path):
    lists = ranked_lists(read_trec_run(trec_dl / "run.bm25.dl20.top100.txt"))
    lists["short"] = ["d1"]
    write_trec_run(run_from_lists(lists, "copy"), tmp_path / "whole.run")
    with RunWriter(tmp_path / "streamed.run", "copy") as writer:
        for qid, docs in lists.items():
            writer.write(qid, docs)
    assert (tmp_path / "streamed.run").read_bytes() == (tmp_path / "whole.run").read_bytes()
    for bad in (("q 1", ["d1"]), ("q1", ["d 1"]), ("q1", ["d1", ""])):
        with pytest.raises(ValueError, match="whitespace"), RunWriter(tmp_path / "x.run", "t") as writer:
            writer.write(*bad)
        assert not (tmp_path / "x.run").exists() and not (tmp_path / "x.run.tmp").exists()


def test_memory_is_one_query_not_the_run(tmp_path: Path):
    """Memory grows only by the ids of the queries seen (to notice one coming back), ~100 bytes a
    query, not by their hits (20 here: `ranked_lists(read_trec_run(...))` takes ~8 KB a query)."""

    def peak(n_queries: int) -> int:
        path = tmp_path / f"{n_queries}.run"
        path.write_text(
            "".join(f"q{q} Q0 doc{q}-{d} {d + 1} {100 - d}.0 t\n" for q in range(n_queries) for d in range(20))
        )
        tracemalloc.start()
        for query in iter_run(path):
            assert len(query.doc_ids) == 20
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    small, large = peak(200), peak(4000)
    assert large - small < 160 * (4000 - 200), (small, large)
