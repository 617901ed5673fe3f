import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pipeline.contract.candidates import read_candidates
from pipeline.contract.corpus import CorpusStore, Passage, UnknownDocError, build_corpus_store, iter_passages
from pipeline.contract.queries import read_queries
from pipeline.contract.rerank_inputs import check_run_references
from pipeline.contract.run import read_trec_run
from pipeline.infra.errors import InputError


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


def test_a_store_without_passages_is_refused(tmp_path: Path):
    store = build_corpus_store([(1, Passage("d1", "text"))], tmp_path / "store", "c.tsv", progress=False)
    np.save(store.path / "ids.npy", np.array([], dtype="S2"))
    np.save(store.path / "rows.npy", np.array([], dtype=np.int64))
    with pytest.raises(InputError, match="the corpus store holds no passages"):
        CorpusStore(store.path)


_POOLS: list[pa.MemoryPool] = []


@pytest.mark.parametrize("rows_per_lookup", [10, 150])  # row by row, and one take per record batch
def test_lookups_read_only_their_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows_per_lookup: int):
    """A lookup reads its rows from the memory-mapped batches: it never copies the corpus (Arrow's
    `Table.take` concatenates a chunked column first, ~4 MiB here, the whole corpus at MS MARCO size)."""
    monkeypatch.setattr("pipeline.contract.corpus._BATCH_ROWS", 50)
    monkeypatch.setattr("pipeline.contract.corpus._SCALAR_LOOKUPS", 20)
    texts = {f"d{i}": f"passage {i} " + "x" * 2000 for i in range(2000)}
    passages = ((i, Passage(d, t, "T" if i % 3 else None)) for i, (d, t) in enumerate(texts.items()))
    store = build_corpus_store(passages, tmp_path / "store", "synthetic", progress=False)
    assert len(list(store.iter_batches())) == 40
    wanted = [f"d{i}" for i in np.random.default_rng(0).choice(2000, rows_per_lookup, replace=False)]
    default = pa.default_memory_pool()
    proxy = pa.proxy_memory_pool(default)
    _POOLS.append(proxy)  # never freed: an Arrow buffer allocated from it may outlive the test
    pa.set_memory_pool(proxy)
    try:
        got = store.passages(wanted)
    finally:
        pa.set_memory_pool(default)
    assert [p.doc_id for p in got] == wanted
    assert all(p.text == texts[p.doc_id] and p.title == ("T" if int(p.doc_id[1:]) % 3 else None) for p in got)
    assert proxy.max_memory() < 64 * 2100 * 2  # at most what the rows themselves hold, twice over


def test_building_a_store_holds_its_ids_compactly(tmp_path: Path):
    """The ids are kept as fixed-width bytes (plus each one's line) while the store is built: ~11
    bytes a passage here, where lists of Python objects took ~90 (1.2 GB at MS MARCO's 8.8M)."""
    import tracemalloc

    def peak(n: int) -> int:
        passages = ((i, Passage(str(i), "a short passage")) for i in range(n))
        tracemalloc.start()
        build_corpus_store(passages, tmp_path / f"store-{n}", "synthetic", progress=False)
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    small, large = peak(70_000), peak(350_000)  # both above a batch (65,536 passages)
    assert large - small < 40 * (350_000 - 70_000), (small, large)
