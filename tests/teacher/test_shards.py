"""`--shard I/N` + `merge-shards` give the same run, log and counts as one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.teacher.shards import merge_shards, parse_shard
from tests.teacher.conftest import dl19_inputs, log_records


def rerank(dl_store: Path, log: Path, out: Path, *extra: str) -> None:
    args = [
        "rerank",
        *dl19_inputs(dl_store),
        "--backend",
        f"replay:{log}",
        "--prompt",
        "rank_vicuna",
        "--tag",
        "rankvicuna",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    assert main(args) == 0


def test_three_shards_merge_to_the_single_process_run(dl_store: Path, rankvicuna_dl19_log: Path, tmp_path: Path):
    single = tmp_path / "single.run"
    rerank(dl_store, rankvicuna_dl19_log, single)
    shards = [tmp_path / f"teacher.{i}.run" for i in range(3)]
    for i, shard in enumerate(shards):
        rerank(dl_store, rankvicuna_dl19_log, shard, "--shard", f"{i}/3")
    assert [len(set(line.split()[0] for line in s.read_text().splitlines())) for s in shards] == [15, 14, 14]
    merged = tmp_path / "merged.run"
    assert (
        main(
            [
                "merge-shards",
                "--run",
                str(dl_store / "runs" / "retrieve_results_dl19.run"),
                "--out",
                str(merged),
                *map(str, shards),
            ]
        )
        == 0
    )
    assert merged.read_text() == single.read_text()
    assert log_records(merged) == log_records(single)
    one, many = (json.loads(p.with_name(p.name + ".stats.json").read_text()) for p in (single, merged))
    for key in ("queries", "candidates", "windows", "windows_repaired", "repairs", "prompt_tokens"):
        assert many[key] == one[key], key
    assert many["windows"] == 387 and len(many["provenance"]["shards"]) == 3


def test_merge_refuses_incomplete_or_overlapping_shards(dl_store: Path, rankvicuna_dl19_log: Path, tmp_path: Path):
    run = dl_store / "runs" / "retrieve_results_dl19.run"
    shards = [tmp_path / f"t.{i}.run" for i in range(2)]
    for i, shard in enumerate(shards):
        rerank(dl_store, rankvicuna_dl19_log, shard, "--shard", f"{i}/2", "--max-queries", "6")
    with pytest.raises(InputError, match="queries are in no shard"):
        merge_shards(run, shards, tmp_path / "m.run")
    with pytest.raises(InputError, match="in more than one shard"):
        merge_shards(run, [shards[0], shards[0]], tmp_path / "m.run")
    with pytest.raises(ValueError, match="I/N"):
        parse_shard("1of2")
    with pytest.raises(ValueError, match="0 <= I < N"):
        parse_shard("2/2")


def test_every_shard_checks_the_whole_run(dl_store: Path, rankvicuna_dl19_log: Path, tmp_path: Path, capsys):
    lines = (dl_store / "runs" / "retrieve_results_dl19.run").read_text().splitlines()
    second_qid = next(line.split()[0] for line in lines if line.split()[0] != lines[0].split()[0])
    bad = next(i for i, line in enumerate(lines) if line.split()[0] == second_qid)  # a query of shard 1/2
    lines[bad] = lines[bad].replace(lines[bad].split()[2], "no-such-passage")
    bad_run = tmp_path / "bad.run"
    bad_run.write_text("\n".join(lines) + "\n")
    argv = ["rerank", "--run", str(bad_run), "--queries", str(dl_store / "queries.tsv")]
    argv += ["--corpus", str(dl_store / "corpus"), "--backend", f"replay:{rankvicuna_dl19_log}"]
    argv += ["--prompt", "rank_vicuna", "--shard", "0/2", "--out", str(tmp_path / "t.0.run"), "--no-progress"]
    assert main(argv) == 2
    assert f"bad.run:{bad + 1}: doc 'no-such-passage' is not in the corpus" in capsys.readouterr().err
    assert not (tmp_path / "t.0.run").exists()
