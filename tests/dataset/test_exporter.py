"""`distillm export` on a real teacher run: RankVicuna-7B's DL19 replies replayed through `rerank`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.contract.queries import read_queries
from pipeline.contract.run import ranked_lists, read_trec_run
from tests.dataset.conftest import REFERENCE, export_argv

# The trainer reads these columns: names and types must never change.
SCHEMA = [
    ("qid", "string"),
    ("query", "string"),
    ("doc_id", "string"),
    ("first_stage_rank", "int32"),
    ("first_stage_score", "double"),
    ("teacher_rank", "int32"),
    ("teacher_score", "float"),
    ("first_stage", "string"),
    ("teacher", "string"),
]


def shards(dataset: Path) -> list[Path]:
    return sorted((dataset / "data").glob("*.parquet"))


def test_schema_rows_and_rankings(dataset_dl19: Path, teacher_dl19: dict[str, Path]):
    [shard] = shards(dataset_dl19)
    assert shard.name == "train-00000-of-00001.parquet"
    schema = pq.read_schema(shard)
    assert [(f.name, str(f.type)) for f in schema] == [*SCHEMA, ("text", "string")]
    frame = pd.read_parquet(shard)
    assert len(frame) == 4300 and frame["qid"].nunique() == 43
    # queries in teacher-run order, each the teacher's permutation of its 100 candidates
    teacher = ranked_lists(read_trec_run(teacher_dl19["teacher"]))
    assert list(pd.unique(frame["qid"])) == list(teacher)
    for qid, group in frame.groupby("qid", sort=False):
        assert group["teacher_rank"].tolist() == list(range(1, 101))
        assert group["doc_id"].tolist() == teacher[qid][:100]
        assert (group["teacher_score"] == 101 - group["teacher_rank"]).all()
    # the teacher's rankings are rank_llm's own RankVicuna run, query for query
    reference = ranked_lists(
        read_trec_run(REFERENCE.resolve().parent / "reference/teacher_runs/rankvicuna7b/run_dl19.txt")
    )
    assert {q: docs[:100] for q, docs in reference.items()} == {
        q: g["doc_id"].tolist() for q, g in frame.groupby("qid")
    }
    # first-stage rank and score are the BM25 run's
    bm25 = read_trec_run(teacher_dl19["first_stage"]).set_index(["qid", "doc_id"])
    joined = bm25.loc[list(zip(frame["qid"], frame["doc_id"], strict=True))]
    assert (joined["rank"].to_numpy() == frame["first_stage_rank"].to_numpy()).all()
    assert (joined["score"].to_numpy() == frame["first_stage_score"].to_numpy()).all()
    assert set(frame["first_stage"]) == {"bm25"} and set(frame["teacher"]) == {"rankvicuna"}
    queries = read_queries(teacher_dl19["queries"])
    assert (frame["query"] == frame["qid"].map(queries)).all()
    assert frame["text"].str.len().min() > 0


def test_text_is_the_corpus_passage(dataset_dl19: Path, teacher_dl19: dict[str, Path]):
    from pipeline.contract.corpus import CorpusStore

    frame = pd.read_parquet(dataset_dl19 / "data", columns=["doc_id", "text"])
    sample = frame.iloc[::97]
    passages = CorpusStore(teacher_dl19["corpus"]).passages(sample["doc_id"].tolist())
    assert sample["text"].tolist() == [p.text for p in passages]


def test_metadata_in_json_parquet_and_card(dataset_dl19: Path, teacher_dl19: dict[str, Path]):
    metadata = json.loads((dataset_dl19 / "metadata.json").read_text())
    embedded = json.loads(pq.read_schema(shards(dataset_dl19)[0]).metadata[b"distillm"])
    assert embedded == metadata
    stats = json.loads(teacher_dl19["stats"].read_text())
    provenance = stats["provenance"]
    assert metadata["queries"] == 43 and metadata["rows"] == 4300 and metadata["depth"] == 100
    assert (metadata["window"], metadata["stride"]) == (20, 10)
    assert metadata["model"] == "castorini/rank_vicuna_7b_v1" and metadata["prompt"] == "rank_vicuna"
    assert metadata["prompt_sha256"] == provenance["prompt_sha256"]
    assert metadata["repair_rate"] == stats["repair_rate"] and metadata["repairs"] == stats["repairs"]
    assert metadata["windows"] == 387 and metadata["versions"] == provenance["versions"]
    assert metadata["first_stage"] == "bm25" and metadata["teacher"] == "rankvicuna"
    assert metadata["pipeline_version"] and "created" not in metadata  # same inputs, same bytes (DVC)
    run_name = "__rankvicuna-bm25-43-sampled-100__msmarco-passage-trec-dl-2019-judged.run"
    assert metadata["teacher_run_file"] == run_name
    run = read_trec_run(dataset_dl19 / run_name)
    assert len(run) == 4300 and ranked_lists(run) == ranked_lists(read_trec_run(teacher_dl19["teacher"]))
    card = (dataset_dl19 / "README.md").read_text()
    header = card.split("---\n")[1]
    for needle in ("license: cc-by-nc-4.0", "- text-ranking", "- en", "path: data/*.parquet", "num_examples: 4300"):
        assert needle in header
    for needle in ("| queries | 43 |", "| rows | 4300 |", provenance["prompt_sha256"], "window 20, stride 10"):
        assert needle in card
    assert "non-commercial research" in card and "it is MS MARCO's" in card and "Schlatt" in card


def test_loads_with_pandas_pyarrow_and_datasets(dataset_dl19: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    assert datasets.config.HF_HUB_OFFLINE
    table = pq.read_table(dataset_dl19 / "data")
    assert table.num_rows == 4300 and table.schema.field("teacher_rank").type == "int32"
    frame = pd.read_parquet(dataset_dl19 / "data")
    assert len(frame) == 4300 and str(frame["teacher_score"].dtype) == "float32"
    files = str(dataset_dl19 / "data" / "*.parquet")
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 4300 and ds.features["teacher_rank"].dtype == "int32"
    assert ds[0]["teacher_rank"] == 1 and ds[0]["qid"] == frame["qid"].iloc[0]
    # the card's YAML header (configs -> data/*.parquet) is enough for the Hub's loader
    again = datasets.load_dataset(str(dataset_dl19), split="train", cache_dir=str(tmp_path / "cache2"))
    assert again.num_rows == 4300 and again.column_names == frame.columns.tolist()


def test_shards_keep_queries_whole(teacher_dl19: dict[str, Path], tmp_path: Path):
    out = tmp_path / "sharded"
    assert main(export_argv(teacher_dl19, out, "--shard-rows", "250", "--name", "tiny")) == 0
    files = shards(out)
    assert len(files) == 22 and files[0].name == "train-00000-of-00022.parquet"  # 43 queries, 2 per shard
    seen: set[str] = set()
    for path in files:
        qids = set(pd.read_parquet(path, columns=["qid"])["qid"])
        assert not qids & seen  # no query in two shards
        seen |= qids
    assert len(seen) == 43
    assert [f.name for f in pq.read_schema(files[0])] == [name for name, _ in SCHEMA]  # no text
    assert "No passage text is included" in (out / "README.md").read_text()
    assert main(["validate", str(out)]) == 0


def _write_run(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("what", ["query", "doc"])
def test_teacher_entries_missing_from_the_first_stage(teacher_dl19: dict[str, Path], tmp_path: Path, capsys, what):
    lines = teacher_dl19["first_stage"].read_text().splitlines(keepends=True)
    first_qid = lines[0].split()[0]
    if what == "query":
        lines = [line for line in lines if line.split()[0] != first_qid]
    else:
        gone = teacher_dl19["teacher"].read_text().splitlines()[4].split()[2]  # the teacher's 5th doc
        lines = [line for line in lines if line.split()[2] != gone or line.split()[0] != first_qid]
    first_stage = _write_run(tmp_path / "fs.run", lines)
    argv = export_argv({**teacher_dl19, "first_stage": first_stage}, tmp_path / "out")
    assert main(argv) == 2
    err = capsys.readouterr().err
    line = 1 if what == "query" else 5
    assert f"{teacher_dl19['teacher']}:{line}:" in err and str(first_stage) in err
    assert (
        f"query {first_qid!r} is not in the first-stage run" if what == "query" else "not in the first-stage run"
    ) in err
    assert not (tmp_path / "out").exists()


def test_bad_stats_unknown_query_text_and_refusing_to_overwrite(teacher_dl19: dict[str, Path], tmp_path: Path, capsys):
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"queries": 43}))
    assert main(export_argv({**teacher_dl19, "stats": stats}, tmp_path / "o")) == 2
    assert "provenance.depth" in capsys.readouterr().err
    queries = tmp_path / "q.tsv"
    queries.write_text("".join(teacher_dl19["queries"].read_text().splitlines(keepends=True)[1:]))
    assert main(export_argv({**teacher_dl19, "queries": queries}, tmp_path / "o")) == 2
    assert f"{teacher_dl19['teacher']}:" in (err := capsys.readouterr().err) and "is not in the queries" in err
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(export_argv(teacher_dl19, other)) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and (other / "notes.txt").exists()


def test_replaces_an_earlier_export(teacher_dl19: dict[str, Path], tmp_path: Path):
    out = tmp_path / "again"
    assert main(export_argv(teacher_dl19, out, "--shard-rows", "1000")) == 0
    assert len(shards(out)) == 5
    assert main(export_argv(teacher_dl19, out)) == 0
    assert [p.name for p in shards(out)] == ["train-00000-of-00001.parquet"]  # no stale shards left
    assert os.listdir(out.parent) == ["again"]  # no temporary directory left


def test_card_is_rewritten_from_metadata(dataset_copy: Path, capsys):
    card = dataset_copy / "README.md"
    before = card.read_text()
    card.unlink()
    assert main(["validate", str(dataset_copy)]) == 2
    assert "README.md (the dataset card) is missing" in capsys.readouterr().out
    assert main(["card", str(dataset_copy)]) == 0
    assert card.read_text() == before and main(["validate", str(dataset_copy)]) == 0


def test_names_that_cannot_name_files_are_refused(teacher_dl19: dict[str, Path], tmp_path: Path, capsys):
    assert main(export_argv(teacher_dl19, tmp_path / "o", "--teacher-name", "rank zephyr")) == 2
    assert "teacher name 'rank zephyr'" in capsys.readouterr().err


def test_a_teacher_run_from_elsewhere_with_its_provenance_on_the_command_line(
    teacher_dl19: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
):
    """RankGPT's published DL19 run (gpt-3.5-turbo) becomes a dataset: no stats file needed."""
    rankgpt = REFERENCE.resolve().parent / "reference/teacher_runs/rankgpt_gpt35/dl19_run1.txt"
    t, out = teacher_dl19, tmp_path / "datasets" / "rankgpt"  # its parent folder does not exist yet
    argv = ["export", "--first-stage", str(t["first_stage"]), "--teacher", str(rankgpt), "--queries", str(t["queries"])]
    argv += ["--teacher-name", "rankgpt", "--first-stage-name", "bm25", "--out", str(out)]
    assert main(argv) == 2
    assert "needs --teacher-model" in capsys.readouterr().err
    source = "castorini/rank_llm rerank_results/BM25 (RankGPT, gpt-3.5-turbo)"
    assert main([*argv, "--teacher-model", "gpt-3.5-turbo", "--teacher-source", source]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert (metadata["model"], metadata["depth"], metadata["teacher_source"]) == ("gpt-3.5-turbo", 100, source)
    assert metadata["queries"] == 43 and metadata["rows"] == 4300 and metadata["windows"] is None
    frame = pd.read_parquet(out / "data")
    assert {q: g["doc_id"].tolist() for q, g in frame.groupby("qid")} == {
        q: docs[:100] for q, docs in ranked_lists(read_trec_run(rankgpt)).items()
    }
    assert source in (out / "README.md").read_text()
    # stats and command-line provenance do not mix
    both = [*argv, "--teacher-model", "x", "--teacher-stats", str(t["stats"])]
    assert main(both) == 2 and "describe a run without --teacher-stats" in capsys.readouterr().err
