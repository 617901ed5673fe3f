from pathlib import Path

import pytest

from pipeline.infra.errors import InputError
from pipeline.io.trec import ranked_lists, read_qrels, read_trec_run, run_from_lists, write_trec_run


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


def test_qrels(trec_dl: Path, tmp_path: Path):
    qrels = read_qrels(trec_dl / "qrels.dl19-passage.txt")
    assert qrels["qid"].nunique() == 43 and set(qrels["relevance"]) == {0, 1, 2, 3}
    bad = tmp_path / "q.txt"
    bad.write_text("1 0 d1 2\n1 0 d1 3\n")
    with pytest.raises(InputError, match=r"q\.txt:2: duplicate judgment"):
        read_qrels(bad)
    bad.write_text("1 0 d1 high\n")
    with pytest.raises(InputError, match="relevance is not an integer"):
        read_qrels(bad)


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
