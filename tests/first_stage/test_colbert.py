"""ColBERTv2 with colbert-ai's PLAID engine on real TREC DL passages, plus bad input and hangs.

The encoder is MiniLM with an untrained projection (`colbert_checkpoint`): a weak ColBERT,
so these tests check the engine (PLAID against exact MaxSim over the same embeddings,
determinism, the data contract), not effectiveness. The default run indexes ~600 DL19
candidate passages; the 9,658-passage pool is `slow`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.contract.corpus import CorpusStore
from pipeline.contract.qrels import read_qrels
from pipeline.contract.run import ranked_lists, read_trec_run, stats_path, write_trec_run
from pipeline.first_stage import colbert
from pipeline.first_stage import colbert_runtime as colbert_ai
from pipeline.first_stage.colbert_checkpoint import build_minilm_colbert_checkpoint
from pipeline.infra.errors import InputError

# Session fixtures (checkpoint, subset store, index, runs): see colbert_fixtures.py.
pytest_plugins = ["tests.first_stage.colbert_fixtures"]
engine = pytest.mark.engine
# The first test that needs the index builds it (4 C++ extensions compiled on a fresh machine,
# then ~600 passages encoded): minutes on a loaded 2-core machine, so more than the default.
pytestmark = pytest.mark.timeout(1800)
REPO = Path(__file__).resolve().parents[2]


def recall_of_exhaustive(exhaustive: dict[str, list[str]], run: pd.DataFrame) -> float:
    """Share of the exhaustive top-10s (all queries pooled) found in the run's top-100s."""
    plaid = ranked_lists(run)
    found = sum(len(set(docs) & set(plaid.get(qid, [])[:100])) for qid, docs in exhaustive.items())
    return found / sum(len(docs) for docs in exhaustive.values())


# ------------------------------------------------------------------ checkpoint and transformers 5


def test_post_init_fix_makes_the_checkpoint_load_under_transformers_5(colbert_checkpoint: Path) -> None:
    import transformers
    from colbert.infra import ColBERTConfig
    from colbert.modeling import hf_colbert
    from safetensors.torch import load_file

    assert int(transformers.__version__.split(".")[0]) >= 5
    # Without the fix, transformers 5 cannot finish building colbert-ai's model.
    unpatched = hf_colbert.class_factory.original(str(colbert_checkpoint))
    with pytest.raises(AttributeError, match="all_tied_weights_keys"):
        unpatched.from_pretrained(str(colbert_checkpoint), colbert_config=ColBERTConfig())

    model = colbert.check_checkpoint_loads(colbert_checkpoint)
    assert colbert_ai.post_init_fix_applied()
    weights = load_file(colbert_checkpoint / "model.safetensors")
    # post_init() must not re-initialise what was loaded.
    assert model.linear.weight.shape == (128, 384)
    assert bool((model.linear.weight == weights["linear.weight"]).all())
    name = "encoder.layer.5.output.dense.weight"
    assert bool((model.bert.state_dict()[name] == weights[f"bert.{name}"]).all())
    assert model.colbert_config.dim == 128 and model.colbert_config.doc_maxlen == 180


def test_post_init_fix_also_applies_when_colbert_was_imported_first() -> None:
    code = (
        "import colbert.modeling.base_colbert as base, colbert.modeling.hf_colbert as hf\n"
        "from colbert.modeling.tokenization import doc_tokenization as doc, query_tokenization as query\n"
        "assert not getattr(hf.class_factory, 'calls_post_init', False)\n"
        "import pipeline.first_stage.colbert\n"
        "assert hf.class_factory.calls_post_init\n"
        "assert base.class_factory is doc.class_factory is query.class_factory is hf.class_factory\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_checkpoint_builder_is_deterministic_and_in_the_colbertv2_layout(
    colbert_checkpoint: Path, tmp_path: Path
) -> None:
    again = build_minilm_colbert_checkpoint(tmp_path / "again")
    expected = {"config.json", "model.safetensors", "artifact.metadata", "tokenizer.json", "vocab.txt"}
    assert expected <= {p.name for p in again.iterdir()}
    assert (again / "model.safetensors").read_bytes() == (colbert_checkpoint / "model.safetensors").read_bytes()
    artifact = json.loads((again / "artifact.metadata").read_text())
    assert artifact["dim"] == 128 and artifact["doc_maxlen"] == 180 and "gpus" not in artifact
    assert not (tmp_path / "again.tmp").exists()


def _truncate_weights(path: Path) -> None:
    with open(path / "model.safetensors", "r+b") as f:
        f.truncate(1000)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing", "checkpoint folder not found"),
        ("no weights", "has no weights"),
        ("bad config", "cannot read config.json"),
        ("truncated weights", "cannot load the ColBERT checkpoint"),
        ("hub id offline", "cannot get this checkpoint from the Hugging Face hub"),
    ],
)
def test_broken_checkpoint_fails_fast_with_a_clear_message(
    breakage: str, message: str, colbert_checkpoint: Path, colbert_subset: Path, tmp_path: Path, capsys, caplog
) -> None:
    broken = tmp_path / "broken"
    if breakage != "missing":
        shutil.copytree(colbert_checkpoint, broken)
    if breakage == "no weights":
        (broken / "model.safetensors").unlink()
    elif breakage == "bad config":
        (broken / "config.json").write_text("{not json")
    elif breakage == "truncated weights":
        _truncate_weights(broken)
    checkpoint = "distillm-tests/no-such-colbert" if breakage == "hub id offline" else str(broken)
    index = tmp_path / "index"
    with caplog.at_level(logging.INFO, logger="pipeline.first_stage.colbert"), pytest.raises(InputError, match=message):
        colbert.build_index(colbert_subset, index, checkpoint, progress=False)
    # fast: stopped before the slow steps (extensions, encoding), whatever the machine's speed
    assert "C++ extensions" not in caplog.text and "indexing" not in caplog.text
    assert not index.exists() and not index.with_name("index.tmp").exists()
    argv = ["index", "colbert", "--corpus", str(colbert_subset), "--checkpoint", checkpoint, "--index", str(index)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("distillm index: error:")


# ------------------------------------------------------------------ hangs


@engine
def test_a_stale_compile_lock_stops_the_cli_with_a_clear_error_instead_of_hanging(
    colbert_checkpoint: Path, colbert_subset: Path, tmp_path: Path
) -> None:
    """A compile killed mid-way leaves TORCH_EXTENSIONS_DIR/<name>/lock, and torch then
    waits for it forever: a real in-process hang, which the watchdog must turn into an error."""
    extensions = tmp_path / "torch_extensions"
    for name in colbert_ai.EXTENSIONS:
        (extensions / name).mkdir(parents=True)
        (extensions / name / "lock").touch()
    index = tmp_path / "index"
    argv = ["index", "colbert", "--corpus", str(colbert_subset), "--checkpoint", str(colbert_checkpoint)]
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "OMP_NUM_THREADS": "2"}
    # The watchdog's message below says it stopped the hang; the timeout only bounds a watchdog
    # that never fires (the start-up alone, torch and colbert-ai, takes ~20 s on 2 cores).
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv, "--index", str(index), "--stall-timeout", "5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1, done.stderr[-2000:]
    assert last.startswith("distillm index: error: colbert indexing made no progress for")
    assert "file_baton.py" in last and str(extensions / "segmented_maxsim_cpp" / "lock") in last
    assert not index.exists() and not index.with_name("index.tmp").exists()


# ------------------------------------------------------------------ bad index directories


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "index directory not found"),
        ("empty", "not a ColBERT index (no distillm.json)"),
        ("corpus store", "not a ColBERT index (it is a corpus store)"),
        ("lucene", "not a ColBERT index (it is a Lucene (BM25) index)"),
        ("colbert-ai only", "built elsewhere"),
        ("other provenance", "format 'distillm-bm25/1'"),
        ("incomplete", "incomplete ColBERT index: missing ivf.pid.pt, doc_ids.npy"),
    ],
)
def test_a_directory_that_is_not_an_index_is_a_clear_input_error(
    kind: str, message: str, colbert_subset: Path, trec_dl: Path, tmp_path: Path, capsys
) -> None:
    index = tmp_path / "index"
    if kind == "corpus store":
        index = colbert_subset
    elif kind != "missing":
        index.mkdir()
    if kind == "lucene":
        (index / "segments_1").touch()
    elif kind == "colbert-ai only":
        (index / "metadata.json").write_text("{}")
    elif kind == "other provenance":
        (index / "distillm.json").write_text(json.dumps({"format": "distillm-bm25/1"}))
    elif kind == "incomplete":
        (index / "distillm.json").write_text(json.dumps({"format": colbert.INDEX_FORMAT}))
        (index / "metadata.json").write_text("{}")
        (index / "centroids.pt").touch()
    with pytest.raises(InputError, match=re.escape(message)):
        colbert.retrieve(index, {"1": "what is a flea"}, progress=False)
    out = tmp_path / "run"
    argv = ["retrieve", "colbert", "--index", str(index), "--queries", str(trec_dl / "topics.dl19-passage.txt")]
    assert main([*argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_search_settings_that_cannot_return_k_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ndocs >= 4 k"):
        colbert.retrieve(tmp_path, {"1": "flea"}, k=100, ndocs=399, progress=False)
    with pytest.raises(ValueError, match="ncells >= 1"):
        colbert.retrieve(tmp_path, {"1": "flea"}, ncells=0, progress=False)


# ------------------------------------------------------------------ index and search (PLAID)


@engine
def test_index_records_provenance_and_leaves_nothing_behind(
    colbert_index, colbert_subset: Path, colbert_checkpoint: Path
) -> None:
    provenance = colbert.check_index(colbert_index.path)
    store = CorpusStore(colbert_subset)
    print(f"PLAID index of {len(store)} passages: {colbert_index.seconds:.1f} s (CLI, extensions included)")
    assert provenance["format"] == colbert.INDEX_FORMAT
    assert provenance["corpus"] == str(colbert_subset.resolve())
    assert provenance["count"] == len(store) > 500
    assert provenance["checkpoint_path"] == str(colbert_checkpoint.resolve())
    assert (
        provenance["settings"] | {"nbits": 2, "doc_maxlen": 180, "kmeans_niters": 4, "dim": 128}
        == provenance["settings"]
    )
    assert provenance["versions"]["post_init_fix"] is True
    assert provenance["versions"]["colbert-ai"] == "0.2.22"
    # Passage id i is row i of the store.
    ids = np.load(colbert_index.path / colbert.DOC_IDS)
    rows = [d for batch in store.iter_batches() for d in batch.column("doc_id").to_pylist()]
    assert [bytes(i).decode() for i in ids] == rows
    assert sorted(p.name for p in colbert_index.path.parent.iterdir()) == ["plaid"]  # no DIR.tmp
    assert not [p for p in colbert_index.path.iterdir() if p.is_dir()]  # colbert-ai left no run folders


INDEX_TENSORS = ("centroids.pt", "buckets.pt", "avg_residual.pt", "0.codes.pt", "0.residuals.pt", "ivf.pid.pt")


def assert_same_index(first: Path, second: Path) -> None:
    import torch

    for name in INDEX_TENSORS:
        a, b = torch.load(first / name), torch.load(second / name)
        a, b = (x if isinstance(x, tuple | list) else [x] for x in (a, b))
        assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), name


@engine
def test_encoding_each_passage_once_builds_the_same_index(
    colbert_subset: Path, colbert_checkpoint: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    """colbert-ai encodes a small collection twice (k-means sample = every passage, then the
    index pass); reusing the first encoding must give a bit-identical index."""
    from contextlib import nullcontext

    from pipeline.contract.corpus import build_corpus_store

    store = CorpusStore(colbert_subset)
    ids = [d for batch in store.iter_batches() for d in batch.column("doc_id").to_pylist()][:150]
    small = build_corpus_store(
        enumerate(store.passages(ids), start=1), tmp_path / "corpus", source="150", progress=False
    )
    with caplog.at_level(logging.INFO, logger="pipeline.first_stage.colbert_runtime"):
        colbert.build_index(small.path, tmp_path / "once", colbert_checkpoint, progress=False)
    assert "reusing the k-means sample's embeddings of all 150 passages" in caplog.text
    monkeypatch.setattr(colbert, "encode_each_passage_once", lambda size: nullcontext())
    colbert.build_index(small.path, tmp_path / "twice", colbert_checkpoint, progress=False)
    assert_same_index(tmp_path / "once", tmp_path / "twice")


@engine
def test_plaid_top100_holds_the_exhaustive_maxsim_top10(colbert_runs, exhaustive_top10) -> None:
    run, stats = colbert_runs[0]
    share = recall_of_exhaustive(exhaustive_top10, run)
    print(f"exhaustive MaxSim top-10 found in PLAID's top-100: {share:.4f} ({stats['queries']} queries)")
    assert share >= 0.95


@engine
def test_run_follows_the_data_contract_and_searches_are_deterministic(
    colbert_runs, dl_queries: dict[str, str], tmp_path: Path
) -> None:
    (run, stats), (again, _) = colbert_runs
    assert run.equals(again)
    assert list(run["qid"].unique()) == list(dl_queries)  # input order
    assert (run.groupby("qid").size() == 100).all()
    assert stats["queries_with_fewer_than_k_hits"] == 0 and stats["hits"] == 100 * len(dl_queries)
    assert (run.groupby("qid")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1)))).all()
    assert (run.groupby("qid")["score"].apply(lambda s: s.is_monotonic_decreasing and s.is_unique)).all()
    assert set(run["tag"]) == {"colbert"}
    write_trec_run(run, tmp_path / "subset.run")
    back = read_trec_run(tmp_path / "subset.run")
    assert back[["qid", "doc_id", "rank", "score"]].equals(run[["qid", "doc_id", "rank", "score"]])
    print(f"PLAID search: {stats['queries_per_second']} queries/s")


@engine
def test_retrieve_cli_writes_the_run_and_its_stats(colbert_index, dl_store: Path, tmp_path: Path) -> None:
    queries = dl_store / "queries" / "retrieve_results_dl19.tsv"
    out = tmp_path / "runs" / "colbert-dl19.run"
    argv = ["retrieve", "colbert", "--index", str(colbert_index.path), "--queries", str(queries), "--out", str(out)]
    assert main([*argv, "--tag", "minilm-colbert", "--threads", "2"]) == 0
    run = read_trec_run(out)
    stats = json.loads(stats_path(out).read_text())
    assert run["qid"].nunique() == stats["queries"] == 43 and set(run["tag"]) == {"minilm-colbert"}
    assert stats["queries_with_fewer_than_k_hits"] == 0 and stats["hits"] == len(run) == 4300
    assert stats["settings"] | {"ncells": 8, "centroid_score_threshold": 0.35, "ndocs": 8192} == stats["settings"]
    assert stats["index_provenance"]["format"] == colbert.INDEX_FORMAT and stats["queries_source"] == str(queries)


@engine
def test_queries_with_fewer_than_k_hits_are_counted_and_logged(
    colbert_index, dl_queries: dict[str, str], caplog
) -> None:
    count = colbert.check_index(colbert_index.path)["count"]
    queries = dict(list(dl_queries.items())[:5])
    k = count + 1  # more than the index holds: every query must come back short
    with caplog.at_level(logging.WARNING, logger="pipeline.first_stage.colbert"):
        run, stats = colbert.retrieve(colbert_index.path, queries, k=k, ndocs=4 * k, progress=False)
    assert stats["queries_with_fewer_than_k_hits"] == 5 and stats["qids_with_fewer_than_k_hits"] == list(queries)
    assert stats["queries_without_hits"] == 0 and 0 < stats["hits"] == len(run) <= 5 * count
    assert "5 of 5 queries got fewer than" in caplog.text
    assert (run.groupby("qid")["score"].apply(lambda s: s.is_monotonic_decreasing and s.is_unique)).all()


@engine
def test_searching_with_another_checkpoint_is_logged(
    colbert_index, colbert_checkpoint: Path, dl_queries: dict[str, str], tmp_path: Path, caplog
) -> None:
    other = build_minilm_colbert_checkpoint(tmp_path / "seed-1", seed=1)  # another projection, same shape
    queries = dict(list(dl_queries.items())[:3])
    with caplog.at_level(logging.WARNING, logger="pipeline.first_stage.colbert"):
        run, stats = colbert.retrieve(colbert_index.path, queries, checkpoint=other, progress=False)
    assert "is not the checkpoint" in caplog.text and "weights differ" in caplog.text
    assert stats["search_checkpoint_path"] == str(other.resolve()) and len(run) == 300
    assert stats["search_weights_sha256"] != stats["index_provenance"]["weights_sha256"]


# ------------------------------------------------------------------ slow: the whole pool, a second build


@pytest.mark.timeout(3600)
@pytest.mark.slow
@engine
def test_index_builds_are_deterministic(
    colbert_index, colbert_subset: Path, colbert_checkpoint: Path, colbert_runs, dl_queries, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    colbert.build_index(colbert_subset, again, colbert_checkpoint, progress=False)
    assert_same_index(colbert_index.path, again)
    run, _ = colbert.retrieve(again, dl_queries, progress=False)
    assert run.equals(colbert_runs[0][0])


@pytest.mark.timeout(3600)
@pytest.mark.slow
@engine
def test_full_candidate_pool(dl_store: Path, colbert_checkpoint: Path, trec_dl: Path, tmp_path: Path) -> None:
    """All 9,658 DL19 + DL20 candidates and the 97 queries they are the candidates of.

    Measured: PLAID's top-100 holds 0.980 of the exhaustive top-10s with the default
    settings and 0.989 with every passage a candidate (ncells 32, threshold 0, ndocs 4 N:
    2-bit compression alone); nDCG@10 0.336 (DL19) / 0.383 (DL20).
    """
    from pipeline.contract.queries import read_queries
    from pipeline.evaluation.measures import evaluate

    index = tmp_path / "pool"
    provenance = colbert.build_index(dl_store / "corpus", index, colbert_checkpoint, progress=False)
    count = provenance["count"]
    assert count == 9658
    print(
        f"PLAID index of 9,658 passages: {provenance['seconds']:.0f} s, {provenance['passages_per_second']} passages/s"
    )
    queries = {year: read_queries(dl_store / "queries" / f"retrieve_results_{year}.tsv") for year in ("dl19", "dl20")}
    everything = queries["dl19"] | queries["dl20"]
    exhaustive = colbert.exhaustive_search(colbert_checkpoint, dl_store / "corpus", everything, k=10)
    run, stats = colbert.retrieve(index, everything, progress=False)
    wide, _ = colbert.retrieve(
        index, everything, ncells=32, centroid_score_threshold=0.0, ndocs=4 * count, progress=False
    )
    shares = {
        "default": recall_of_exhaustive(exhaustive, run),
        "compression only": recall_of_exhaustive(exhaustive, wide),
    }
    ndcg = {
        year: evaluate(run, read_qrels(trec_dl / f"qrels.{year}-passage.txt"), ["nDCG@10"])[0]["nDCG@10"]
        for year in queries
    }
    print(
        f"exhaustive top-10 in PLAID top-100: {shares}; nDCG@10 {ndcg}; {stats['queries_per_second']} queries/s "
        f"(default settings)"
    )
    assert stats["queries_with_fewer_than_k_hits"] == 0
    assert shares["compression only"] >= 0.95
    assert shares["default"] >= 0.95
    assert all(0.25 <= value <= 0.6 for value in ndcg.values())  # MiniLM + an untrained projection
