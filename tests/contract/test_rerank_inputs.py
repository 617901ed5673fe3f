"""A run's ranked lists on disk: the same lists and the same errors as reading the run whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.contract.rerank_inputs import read_rerank_inputs, read_rerank_lists
from pipeline.contract.run import ranked_lists, read_trec_run
from pipeline.infra.errors import InputError


def inputs(dl_store: Path) -> tuple[Path, Path, Path]:
    return dl_store / "runs" / "retrieve_results_dl19.run", dl_store / "queries.tsv", dl_store / "corpus"


def test_the_lists_are_read_rerank_inputs_lists(dl_store: Path, tmp_path: Path):
    run, queries, corpus = inputs(dl_store)
    _, whole, _, _ = read_rerank_inputs(run, queries, corpus, max_queries=7)
    with read_rerank_lists(run, queries, corpus, tmp_path / "l.lists", max_queries=7)[0] as lists:
        for _ in range(2):  # each pass reads the file again: the same lists, in the run's order
            assert list(lists) == list(whole.items())
        assert (len(lists), lists.candidates) == (7, 700)
        keep = lambda position, _qid: position % 3 == 1  # noqa: E731 - a shard
    assert not (tmp_path / "l.lists").exists()  # closing deletes the file
    shard, _, _ = read_rerank_lists(run, queries, corpus, tmp_path / "s.lists", keep=keep)
    assert list(dict(shard)) == list(ranked_lists(read_trec_run(run)))[1::3]


def bad_copies(run: Path, tmp_path: Path) -> dict[str, Path]:
    lines = run.read_text().splitlines(keepends=True)
    doc = lines[7].split()[2]
    copies = {
        "doc": [*lines[:7], lines[7].replace(doc, "NOT-A-DOC"), *lines[8:]],
        "query": [*lines[:250], *("999999 " + line.split(" ", 1)[1] for line in lines[250:260]), *lines[260:]],
        "both": ["888 " + lines[0].split(" ", 1)[1], *lines[1:7], lines[7].replace(doc, "NOT-A-DOC"), *lines[8:]],
        "line": [*lines[:300], "1 Q0 d 1 x t\n", *lines[300:]],
        "not grouped": [*lines[100:], *lines[:100]],  # the first query's lines come back at the end
    }
    paths = {}
    for name, content in copies.items():
        paths[name] = tmp_path / f"{name.replace(' ', '-')}.run"
        paths[name].write_text("".join(content))
    return paths


@pytest.mark.parametrize("what", ["doc", "query", "both", "line", "not grouped"])
def test_errors_and_lists_equal_read_rerank_inputs(dl_store: Path, tmp_path: Path, what: str):
    run, queries, corpus = inputs(dl_store)
    bad = bad_copies(run, tmp_path)[what]
    try:
        _, expected, _, _ = read_rerank_inputs(bad, queries, corpus)
    except InputError as e:
        with pytest.raises(InputError) as streamed:
            read_rerank_lists(bad, queries, corpus, tmp_path / "x.lists")
        assert (str(streamed.value), streamed.value.line) == (str(e), e.line)
        assert not (tmp_path / "x.lists").exists()
        return
    assert what == "not grouped"  # read whole, as before
    lists, _, _ = read_rerank_lists(bad, queries, corpus, tmp_path / "x.lists")
    assert dict(lists) == expected and list(dict(lists)) == list(expected)


def test_a_bad_run_line_is_named_before_a_bad_queries_file(dl_store: Path, tmp_path: Path):
    run, _, corpus = inputs(dl_store)
    queries = tmp_path / "q.tsv"
    queries.write_text("1\t\n")
    bad = bad_copies(run, tmp_path)["line"]
    for read in (read_rerank_inputs, lambda *a: read_rerank_lists(*a, tmp_path / "x.lists")):
        with pytest.raises(InputError, match=r"line.run:301: score is not a number"):
            read(bad, queries, corpus)
    with pytest.raises(InputError, match=r"q.tsv:1: query '1' has empty text"):
        read_rerank_lists(run, queries, corpus, tmp_path / "x.lists")
