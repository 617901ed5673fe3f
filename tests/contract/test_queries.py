from pathlib import Path

import pytest

from pipeline.contract.queries import read_queries, write_queries
from pipeline.infra.errors import InputError


def test_reads_shared_topics(trec_dl: Path):
    queries = read_queries(trec_dl / "topics.dl19-passage.txt")
    assert len(queries) == 43
    assert all(text and text == text.strip() for text in queries.values())


def test_jsonl_and_round_trip(tmp_path: Path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"qid": "1", "text": "what is a lobster"}\n{"_id": 2, "text": "tabs\\tand\\nnewlines"}\n')
    queries = read_queries(path)
    assert queries == {"1": "what is a lobster", "2": "tabs\tand\nnewlines"}
    write_queries(queries, tmp_path / "q.tsv")
    assert read_queries(tmp_path / "q.tsv") == {"1": "what is a lobster", "2": "tabs and newlines"}


@pytest.mark.parametrize(
    ("name", "content", "line", "message"),
    [
        ("q.tsv", "1\tok\n2\t   \n", 2, "query '2' has empty text"),
        ("q.tsv", "1\tok\n1\tagain\n", 2, "already defined on line 1"),
        ("q.tsv", "1 no tab here\n", 1, "expected 'qid<TAB>text'"),
        ("q.jsonl", '{"qid": "1", "text": "a"}\n{"qid": "2"\n', 2, "invalid JSON"),
        ("q.jsonl", '{"qid": "1"}\n', 1, "expected a query id"),
    ],
)
def test_bad_queries(tmp_path: Path, name: str, content: str, line: int, message: str):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message) as info:
        read_queries(path)
    assert info.value.line == line
