"""Students move between this pipeline and lightning-ir (0.0.6, its own environment, offline):
lightning-ir loads our student as a mono cross-encoder, we load a checkpoint lightning-ir wrote,
and both libraries give the same scores on the same pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from tests.lightning_ir_env import lightning_ir
from tests.student.conftest import FAST, TRAIN_QIDS

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}  # fp32 on both sides; transformers 4.57 there, 5.x here


@pytest.fixture(scope="module")
def pairs(dl19_lists, dl19_files) -> list[dict]:
    """Real DL19 queries with 12 BM25 passages each (long ones: truncated to FAST's 32 tokens)."""
    from pipeline.contract.corpus import CorpusStore
    from pipeline.student.model import passage_text

    lists, queries, _ = dl19_lists
    corpus = CorpusStore(dl19_files["corpus"])
    return [
        {
            "qid": qid,
            "query": queries[qid],
            "docs": [passage_text(p.text, p.title) for p in corpus.passages(lists[qid][:12])],
        }
        for qid in TRAIN_QIDS[:4]
    ]


@pytest.fixture(scope="module")
def round_trip(distilled: Path, minilm: Path, pairs: list[dict], tmp_path_factory) -> dict:
    """lightning-ir writes its own mono checkpoint on MiniLM, then scores the pairs with it and with our student."""
    work = tmp_path_factory.mktemp("lightning-ir")
    lists = [{"query": p["query"], "docs": p["docs"]} for p in pairs]
    _, theirs_on_ours, theirs_on_theirs = lightning_ir(
        [
            {"op": "write_mono", "backbone": str(minilm), "out": str(work / "mono"), "seed": 0, **_lengths()},
            {"op": "score", "model": str(distilled / "model"), "lists": lists},
            {"op": "score", "model": str(work / "mono"), "lists": lists},
        ],
        work / "jobs",
    )
    return {"checkpoint": work / "mono", "on_ours": theirs_on_ours["scores"], "on_theirs": theirs_on_theirs["scores"]}


def _lengths() -> dict[str, int]:
    return {"query_length": FAST["query_length"], "doc_length": FAST["passage_length"]}


def our_scores(checkpoint: Path | str, pairs: list[dict]) -> list[list[float]]:
    from pipeline.student.checkpoint import load_cross_encoder

    model = load_cross_encoder(checkpoint).eval()
    return [model.score([p["query"]] * len(p["docs"]), p["docs"]).tolist() for p in pairs]


def test_our_student_is_a_lightning_ir_mono_cross_encoder(distilled: Path, round_trip: dict, pairs: list[dict]):
    config = json.loads((distilled / "model" / "config.json").read_text())
    assert (config["model_type"], config["backbone_model_type"]) == ("mono", "bert")
    assert (config["pooling_strategy"], config["linear_bias"], config["scoring_strategy"]) == ("first", False, "rank")
    assert (config["query_length"], config["doc_length"]) == (FAST["query_length"], FAST["passage_length"])
    ours, theirs = np.array(our_scores(distilled / "model", pairs)), np.array(round_trip["on_ours"])
    assert ours.std() > 0.01  # a trained head: the scores discriminate
    np.testing.assert_allclose(ours, theirs, **TOLERANCE)


def test_we_load_a_checkpoint_lightning_ir_wrote(round_trip: dict, pairs: list[dict]):
    from pipeline.student.checkpoint import load_cross_encoder

    model = load_cross_encoder(round_trip["checkpoint"])
    assert (model.settings["query_length"], model.settings["passage_length"]) == (16, 32)
    ours, theirs = np.array(our_scores(round_trip["checkpoint"], pairs)), np.array(round_trip["on_theirs"])
    assert ours.std() > 0.01
    np.testing.assert_allclose(ours, theirs, **TOLERANCE)


def test_rerank_and_continue_training_from_a_lightning_ir_checkpoint(
    round_trip: dict, teacher_dataset: Path, dl19_files, eval_run: Path, tmp_path: Path
):
    from pipeline.contract.run import read_trec_run
    from pipeline.student.train_settings import TrainConfig
    from pipeline.student.trainer import train

    checkpoint = str(round_trip["checkpoint"])
    argv = ["rerank", "--backend", "cross-encoder", "--model", checkpoint, "--run", str(eval_run)]
    argv += ["--queries", str(dl19_files["queries"]), "--corpus", str(dl19_files["corpus"]), "--depth", "10"]
    assert main([*argv, "--out", str(tmp_path / "student.run"), "--no-progress"]) == 0
    assert read_trec_run(tmp_path / "student.run")["qid"].nunique() == len(TRAIN_QIDS)

    for start in ({"init": checkpoint}, {"model": checkpoint}):  # --init, or --model naming a checkpoint
        out = tmp_path / next(iter(start))
        train(
            TrainConfig(
                stage="distill",
                out=out,
                data=teacher_dataset,
                corpus=dl19_files["corpus"],
                list_size=4,
                batch_size=2,
                steps=1,
                no_progress=True,
                **start,
            )
        )
        provenance = json.loads((out / "model" / "provenance.json").read_text())
        assert provenance["base_model"] == checkpoint
        assert json.loads((out / "model" / "config.json").read_text())["doc_length"] == 32  # from the checkpoint


def test_plain_encoders_and_other_lightning_ir_settings(minilm: Path, round_trip: dict, tmp_path: Path):
    import shutil

    from pipeline.student.checkpoint import load_cross_encoder

    with pytest.raises(ValueError, match="a plain encoder without a trained score head"):
        load_cross_encoder(minilm)
    changed = tmp_path / "mean-pooling"
    shutil.copytree(round_trip["checkpoint"], changed)
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "pooling_strategy": "mean"}))
    with pytest.raises(ValueError, match="pooling_strategy 'mean' is not supported"):
        load_cross_encoder(changed)


def test_old_checkpoints_still_load(minilm: Path, pairs: list[dict], tmp_path: Path):
    """A distillm-cross-encoder/1 folder (encoder + head.safetensors + cross_encoder.json) loads and re-saves
    in the mono layout with the same scores."""
    from safetensors.torch import save_file

    from pipeline.student.checkpoint import load_cross_encoder, save_cross_encoder
    from pipeline.student.model import build_cross_encoder

    model = build_cross_encoder(str(minilm), seed=5, **FAST)
    old = tmp_path / "old"
    model.encoder.save_pretrained(old)
    model.tokenizer.save_pretrained(old)
    save_file({"weight": model.head.weight.detach().contiguous()}, old / "head.safetensors")
    settings = {"format": "distillm-cross-encoder/1", "base_model": str(minilm), **FAST}
    (old / "cross_encoder.json").write_text(json.dumps(settings))
    expected = [model.eval().score([p["query"]] * len(p["docs"]), p["docs"]).tolist() for p in pairs]
    np.testing.assert_allclose(our_scores(old, pairs), expected, rtol=0, atol=1e-6)
    save_cross_encoder(load_cross_encoder(old), tmp_path / "new")
    assert not (tmp_path / "new" / "head.safetensors").exists()
    np.testing.assert_allclose(our_scores(tmp_path / "new", pairs), expected, rtol=0, atol=1e-6)
