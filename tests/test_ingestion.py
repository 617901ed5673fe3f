"""`distillm ingest`: candidates over a full corpus (the paper's MS MARCO), sampled training queries."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.contract.corpus import CorpusStore
from pipeline.contract.qrels import read_qrels
from pipeline.contract.queries import read_queries
from pipeline.contract.run import ranked_lists, read_trec_run
from pipeline.infra.errors import InputError
from pipeline.ingestion import ingest_candidates, sample_queries

EXTRA = [{"doc_id": f"extra-{i}", "text": f"a passage no query retrieved, number {i}"} for i in range(5)]


def write_corpus(store: Path, out: Path, drop: str | None = None, change: str | None = None) -> Path:
    """The passages of a store as JSONL plus EXTRA: a corpus larger than the candidates."""
    with out.open("w") as f:
        for batch in CorpusStore(store).iter_batches():
            for doc_id, text in zip(batch.column("doc_id").to_pylist(), batch.column("text").to_pylist(), strict=True):
                if doc_id == drop:
                    continue
                if doc_id == change:
                    text = text + " (another edition)"
                f.write(json.dumps({"doc_id": doc_id, "text": text}) + "\n")
        for record in EXTRA:
            f.write(json.dumps(record) + "\n")
    return out


def test_candidates_over_a_full_corpus_keep_the_corpus_and_the_runs(trec_dl: Path, dl_store: Path, tmp_path: Path):
    corpus = write_corpus(dl_store / "corpus", tmp_path / "corpus.jsonl")
    out = tmp_path / "ingest"
    argv = ["ingest", "candidates", str(trec_dl / "retrieve_results_dl19.json"), "--corpus", str(corpus)]
    assert main([*argv, "--out", str(out)]) == 0
    store = CorpusStore(out / "corpus")
    assert len(store) == len(CorpusStore(dl_store / "corpus")) + len(EXTRA)  # the corpus, not just DL19's candidates
    assert store.meta["source"] == str(corpus)
    assert store.passages(["extra-3"])[0].text == EXTRA[3]["text"]
    run = read_trec_run(out / "runs" / "retrieve_results_dl19.run")
    assert ranked_lists(run) == ranked_lists(read_trec_run(trec_dl / "run.bm25.dl19.top100.txt"))
    assert len(read_queries(out / "queries.tsv")) == 43


def test_a_candidate_missing_from_the_corpus_is_an_error(trec_dl: Path, dl_store: Path, tmp_path: Path, capsys):
    missing = ranked_lists(read_trec_run(dl_store / "runs" / "retrieve_results_dl19.run"))["19335"][0]
    corpus = write_corpus(dl_store / "corpus", tmp_path / "corpus.jsonl", drop=missing)
    candidates = trec_dl / "retrieve_results_dl19.json"
    with pytest.raises(InputError, match=rf"1 candidate passages are not in the corpus .*'{missing}'"):
        ingest_candidates([candidates], tmp_path / "ingest", corpus=corpus)
    argv = ["ingest", "candidates", str(candidates), "--corpus", str(corpus), "--out", str(tmp_path / "again")]
    assert main(argv) == 2
    assert str(candidates) in capsys.readouterr().err


def test_candidate_text_that_differs_from_the_corpus_is_counted_and_the_corpus_text_kept(
    trec_dl: Path, dl_store: Path, tmp_path: Path, caplog
):
    changed = ranked_lists(read_trec_run(dl_store / "runs" / "retrieve_results_dl19.run"))["19335"][5]
    corpus = write_corpus(dl_store / "corpus", tmp_path / "corpus.jsonl", change=changed)
    with caplog.at_level(logging.WARNING, logger="pipeline.ingestion"):
        counts = ingest_candidates([trec_dl / "retrieve_results_dl19.json"], tmp_path / "ingest", corpus=corpus)
    assert counts["text_differs"] == 1 and counts["corpus"] == 9658 + len(EXTRA)
    assert changed in caplog.text
    assert CorpusStore(tmp_path / "ingest" / "corpus").passages([changed])[0].text.endswith("(another edition)")


def test_sampled_queries_are_seeded_and_keep_source_order(trec_dl: Path):
    queries = read_queries(trec_dl / "topics.dl19-passage.txt")
    sample = sample_queries(queries, 8, seed=0)
    assert len(sample) == 8 and sample == sample_queries(queries, 8, seed=0)
    assert list(sample) == [q for q in queries if q in sample]  # source order
    assert sample != sample_queries(queries, 8, seed=1)
    assert sample_queries(queries, 0) == queries and sample_queries(queries, 10**6) == queries


def test_ingest_queries_sample_and_qrels_of_those_queries(trec_dl: Path, tmp_path: Path):
    queries_out, qrels_out = tmp_path / "train" / "queries.tsv", tmp_path / "train" / "qrels.txt"
    topics = trec_dl / "topics.dl19-passage.txt"
    assert main(["ingest", "queries", str(topics), "--sample", "8", "--seed", "3", "--out", str(queries_out)]) == 0
    kept = read_queries(queries_out)
    assert kept == sample_queries(read_queries(topics), 8, seed=3)
    qrels = trec_dl / "qrels.dl19-passage.txt"
    assert main(["ingest", "qrels", str(qrels), "--queries", str(queries_out), "--out", str(qrels_out)]) == 0
    judged = read_qrels(qrels)
    expected = judged[judged["qid"].isin(set(kept))]
    assert len(read_qrels(qrels_out)) == len(expected) and set(read_qrels(qrels_out)["qid"]) <= set(kept)
