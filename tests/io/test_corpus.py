import gzip
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.io.candidates import read_candidates
from pipeline.io.checks import check_run_references
from pipeline.io.corpus import CorpusStore, UnknownDocError, build_corpus_store, iter_passages
from pipeline.io.queries import read_queries
from pipeline.io.trec import read_trec_run


def test_store_holds_the_union_of_dl_candidates(dl_store: Path, trec_dl: Path):
    store = CorpusStore(dl_store / "corpus")
    dl19 = read_candidates(trec_dl / "retrieve_results_dl19.json")
    dl20 = read_candidates(trec_dl / "retrieve_results_dl20.json")
    assert len(dl19.passages) == 4297 and len(dl20.passages) == 5396
    assert len(store) == len(dl19.passages.keys() | dl20.passages.keys())
    # lookups return exactly the text of the JSON, in the order asked
    wanted = list(dl20.passages)[::-37] + list(dl19.passages)[:5]
    got = store.passages(wanted)
    assert [p.doc_id for p in got] == wanted
    expected = {**dl19.passages, **dl20.passages}
    assert all(p.text == expected[p.doc_id].text for p in got)


def test_unknown_doc_ids(dl_store: Path):
    store = CorpusStore(dl_store / "corpus")
    known = next(store.iter_batches(1)).column("doc_id")[0].as_py()
    assert store.missing([known, "nope", "x" * 300, ""]) == ["nope", "x" * 300, ""]
    with pytest.raises(UnknownDocError, match="1 doc id"):
        store.passages([known, "nope"])


def test_run_references_are_checked(dl_store: Path, tmp_path: Path):
    store = CorpusStore(dl_store / "corpus")
    queries = read_queries(dl_store / "queries.tsv")
    run_path = dl_store / "runs" / "retrieve_results_dl19.run"
    check_run_references(read_trec_run(run_path), run_path, queries, store)  # all known: no error
    bad = tmp_path / "bad.run"
    lines = run_path.read_text().splitlines()
    lines[7] = lines[7].replace(lines[7].split()[2], "NOT-A-DOC")
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"bad.run:8: doc 'NOT-A-DOC' is not in the corpus \(1 unknown"):
        check_run_references(read_trec_run(bad), bad, queries, store)
    lines[0] = "999999 " + lines[0].split(" ", 1)[1]
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"bad.run:1: query '999999' is not in the queries"):
        check_run_references(read_trec_run(bad), bad, queries, store)


def test_tsv_jsonl_gz_and_titles(tmp_path: Path):
    tsv = tmp_path / "c.tsv.gz"
    with gzip.open(tsv, "wt") as f:
        f.write("d1\tfirst passage\nd2\tA Title\tsecond passage\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"_id": "d3", "title": "T", "text": "third"}\n{"docid": "d4", "contents": "fourth"}\n')
    store = build_corpus_store(
        [*iter_passages(tsv), *iter_passages(jsonl)], tmp_path / "store", source="test", progress=False
    )
    assert store.has_title and len(store) == 4
    d2, d3, d4 = store.passages(["d2", "d3", "d4"])
    assert (d2.title, d2.text, d3.title, d4.title, d4.text) == ("A Title", "second passage", "T", None, "fourth")
    assert [b.num_rows for b in store.iter_batches(3)] == [3, 1]


def test_duplicate_doc_ids_name_both_lines(tmp_path: Path):
    path = tmp_path / "dup.tsv"
    path.write_text("a\tx\nb\ty\nc\tz\nb\tagain\n")
    with pytest.raises(InputError, match=r"dup.tsv:4: duplicate doc id 'b' \(first on line 2\)"):
        build_corpus_store(iter_passages(path), tmp_path / "store", source=str(path), progress=False)
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.tmp").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [("d1\t  \n", "has empty text"), ("d1\ta\tb\tc\n", "got 4 fields"), ("\tno id\n", "doc id is empty")],
)
def test_bad_corpus_lines(tmp_path: Path, content: str, message: str):
    path = tmp_path / "c.tsv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        list(iter_passages(path))


def test_not_a_store(tmp_path: Path):
    with pytest.raises(InputError, match="not a corpus store"):
        CorpusStore(tmp_path)
