"""TREC runs: read whole and query by query (the same rankings and errors), written by one writer."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from pipeline.contract.qrels import read_qrels
from pipeline.contract.run import (
    NotGrouped,
    RunWriter,
    iter_run,
    ranked_lists,
    read_query,
    read_trec_run,
    run_from_lists,
    write_trec_run,
)
from pipeline.infra.errors import InputError


def test_reads_the_shared_bm25_run(trec_dl: Path):
    run = read_trec_run(trec_dl / "run.bm25.dl19.top100.txt")
    assert len(run) == 4300 and run["qid"].nunique() == 43
    assert list(run.columns) == ["qid", "doc_id", "rank", "score", "tag", "line"]
    lists = ranked_lists(run)
    assert all(len(docs) == 100 for docs in lists.values())
    first = run.iloc[0]
    assert lists[first["qid"]][0] == first["doc_id"] and first["line"] == 1


def test_write_then_read_round_trips(tmp_path: Path, trec_dl: Path):
    run = read_trec_run(trec_dl / "run.bm25.dl20.top100.txt")
    lists = ranked_lists(run)
    out = tmp_path / "out.run"
    write_trec_run(run_from_lists(lists, "copy"), out)
    again = read_trec_run(out)
    assert ranked_lists(again) == lists
    assert set(again["tag"]) == {"copy"}
    # scores strictly decrease with rank, so score-sorting tools (trec_eval) agree with rank
    for _, group in again.groupby("qid"):
        assert group["score"].is_monotonic_decreasing and group["score"].is_unique


def test_ranked_lists_orders_by_rank_not_file_order(tmp_path: Path):
    path = tmp_path / "r.run"
    path.write_text("q1 Q0 b 2 5.0 t\nq1 Q0 a 1 9.0 t\nq2 Q0 c 1 1.0 t\n")
    assert ranked_lists(read_trec_run(path)) == {"q1": ["a", "b"], "q2": ["c"]}


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        ("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 2 0.5\n", 2, "expected 6 fields"),
        ("q1 Q0 d1 one 1.0 t\n", 1, "rank is not an integer"),
        ("q1 Q0 d1 1 high t\n", 1, "score is not a number"),
        ("q1 Q0 d1 1 nan t\n", 1, "score is not finite"),
        ("q1 Q0 d1 1 1.0 t\nq2 Q0 d1 1 1.0 t\nq1 Q0 d1 3 0.2 t\n", 3, "already on line 1"),
    ],
)
def test_malformed_run_lines_name_file_and_line(tmp_path: Path, content: str, line: int, message: str):
    path = tmp_path / "bad.run"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_trec_run(path)
    assert info.value.line == line and info.value.path == str(path)
    assert f"bad.run:{line}:" in str(info.value)


def test_non_utf8_bytes_are_reported_with_line(tmp_path: Path):
    path = tmp_path / "latin1.run"
    path.write_bytes(b"q1 Q0 d1 1 1.0 t\nq1 Q0 caf\xe9 2 0.5 t\n")
    with pytest.raises(InputError, match=r"latin1.run:2: not valid UTF-8 \(byte 0xe9 at column 10\)"):
        read_trec_run(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(InputError, match="file not found"):
        read_trec_run(tmp_path / "nope.run")


def test_whitespace_in_ids_is_refused_on_write(tmp_path: Path):
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run(run_from_lists({"q 1": ["d1"]}, "t"), tmp_path / "x.run")


@pytest.mark.parametrize("content", ["", "\n \n"])
def test_a_run_or_qrels_without_entries_is_refused(tmp_path: Path, content: str):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    with pytest.raises(InputError, match="the run holds no rankings") as info:
        read_trec_run(path)
    assert (info.value.path, info.value.line) == (str(path), None)
    assert read_trec_run(path, allow_empty=True).empty  # a teacher shard may hold no query
    with pytest.raises(InputError, match="the qrels hold no judgments"):
        read_qrels(path)


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
