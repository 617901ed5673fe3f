import json
from pathlib import Path

import pytest

from pipeline.contract.candidates import read_candidates
from pipeline.contract.run import ranked_lists, read_trec_run
from pipeline.infra.errors import InputError


def test_candidates_match_the_trec_run(trec_dl: Path):
    candidates = read_candidates(trec_dl / "retrieve_results_dl19.json")
    assert len(candidates.queries) == 43 and len(candidates.run) == 4300
    assert ranked_lists(candidates.run) == ranked_lists(read_trec_run(trec_dl / "run.bm25.dl19.top100.txt"))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"query": " ", "hits": []}], "empty query text"),
        ([{"query": "q", "hits": [{"qid": "1", "docid": "d", "content": ""}]}], "hit 1: needs"),
        (
            [
                {
                    "query": "q",
                    "hits": [{"qid": "1", "docid": "d", "content": "a"}, {"qid": "1", "docid": "d", "content": "a"}],
                }
            ],
            "listed twice",
        ),
        (
            [
                {"query": "q", "hits": [{"qid": "1", "docid": "d", "content": "a"}]},
                {"query": "r", "hits": [{"qid": "2", "docid": "d", "content": "b"}]},
            ],
            "different text",
        ),
    ],
)
def test_bad_candidates(tmp_path: Path, entries: list, message: str):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(InputError, match=message):
        read_candidates(path)


@pytest.mark.parametrize(
    ("entries", "message"), [([], "no candidates"), ([{"query": "q", "hits": []}], "no candidates"), ([3], "needs")]
)
def test_candidates_without_any_hit_are_refused(tmp_path: Path, entries: list, message: str):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(InputError, match=message):
        read_candidates(path)


def test_non_utf8_bytes_are_named_by_line_and_byte_offset(trec_dl: Path, tmp_path: Path):
    data = (trec_dl / "retrieve_results_dl19.json").read_bytes()
    offset = data.index(b'"content"', len(data) // 2)  # a passage text in the middle of the file
    path = tmp_path / "c.json"
    path.write_bytes(data[:offset] + b"\xff" + data[offset:])
    line = data.count(b"\n", 0, offset) + 1
    with pytest.raises(InputError, match=rf"byte 0xff at byte offset {offset} of the file") as raised:
        read_candidates(path)
    assert (raised.value.path, raised.value.line) == (str(path), line)
