"""`--shard I/N` + `merge-shards` give the same run, log and counts as one process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.infra.errors import InputError
from pipeline.teacher.scale_out import merge_shards, parse_shard
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


# ------------------------------------------------------------------ what merge-shards refuses


@pytest.fixture(scope="module")
def six_query_shards(dl_store: Path, rankvicuna_dl19_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards 0/2 and 1/2 of the first 6 DL19 queries, and `first_stage.run` holding just those 6."""
    folder = tmp_path_factory.mktemp("six")
    for i in range(2):
        rerank(dl_store, rankvicuna_dl19_log, folder / f"t.{i}.run", "--shard", f"{i}/2", "--max-queries", "6")
    lines = (dl_store / "runs" / "retrieve_results_dl19.run").read_text().splitlines(keepends=True)
    qids = list(dict.fromkeys(line.split()[0] for line in lines))[:6]
    (folder / "first_stage.run").write_text("".join(line for line in lines if line.split()[0] in qids))
    return folder


def copy_shards(source: Path, to: Path) -> tuple[Path, list[Path]]:
    """A fresh copy of the six-query shards (runs, logs, stats) to break one thing in."""
    to.mkdir()
    for path in source.iterdir():
        shutil.copy(path, to / path.name)
    return to / "first_stage.run", [to / f"t.{i}.run" for i in range(2)]


def test_the_six_query_shards_merge(six_query_shards: Path, tmp_path: Path):
    first_stage, shards = copy_shards(six_query_shards, tmp_path / "ok")
    assert merge_shards(first_stage, shards, tmp_path / "m.run")["queries"] == 6


@pytest.mark.parametrize(
    ("damage", "message", "line"),
    [
        pytest.param("missing", r"reply log of shard .*t\.1\.run not found", None, id="missing"),
        pytest.param(
            "last 3 lines lost",
            r"holds 24 windows but shard .*t\.1\.run counts 27 in t\.1\.run\.stats\.json",
            None,
            id="truncated",
        ),
        pytest.param("cut mid-line", r"holds 26 windows but shard .*t\.1\.run counts 27", None, id="cut-mid-line"),
        pytest.param("corrupt line 5", r"reply log line is not valid JSON", 5, id="corrupt-line"),
        pytest.param(
            "bytes not UTF-8 on line 5",
            r"not valid UTF-8 \(byte 0xff at byte offset \d+ of the file\)",
            5,
            id="not-utf8",
        ),
    ],
)
def test_merge_refuses_a_missing_truncated_or_corrupt_shard_log(
    six_query_shards: Path, tmp_path: Path, capsys, damage: str, message: str, line: int | None
):
    first_stage, shards = copy_shards(six_query_shards, tmp_path / "shards")
    log = shards[1].with_name("t.1.run.log.jsonl")
    lines = log.read_bytes().splitlines(keepends=True)
    assert len(lines) == 27  # 3 queries x 9 windows
    if damage == "missing":
        log.unlink()
    elif damage == "last 3 lines lost":
        log.write_bytes(b"".join(lines[:-3]))
    elif damage == "cut mid-line":
        log.write_bytes(b"".join(lines[:-1]) + lines[-1][:40])
    elif damage == "corrupt line 5":
        log.write_bytes(b"".join([*lines[:4], b'{"qid": "1", "window": \n', *lines[5:]]))
    else:
        log.write_bytes(b"".join([*lines[:4], lines[4].replace(b'"reply"', b'"re\xffply"'), *lines[5:]]))
    out = tmp_path / "m.run"
    with pytest.raises(InputError, match=message) as raised:
        merge_shards(first_stage, shards, out)
    assert (raised.value.path, raised.value.line) == (str(log), line)
    assert main(["merge-shards", "--run", str(first_stage), "--out", str(out), *map(str, shards)]) == 2
    assert f"distillm merge-shards: error: {log}" in capsys.readouterr().err
    assert not out.exists() and not out.with_name("m.run.log.jsonl").exists()


def test_merge_checks_stats_settings_tags_and_coverage(six_query_shards: Path, tmp_path: Path):
    def broken(name: str) -> tuple[Path, list[Path]]:
        return copy_shards(six_query_shards, tmp_path / name)

    first_stage, shards = broken("stats")
    stats = shards[1].with_name("t.1.run.stats.json")
    stats.unlink()
    with pytest.raises(InputError, match="shard stats not found") as raised:
        merge_shards(first_stage, shards, tmp_path / "m.run")
    assert raised.value.path == str(stats)

    first_stage, shards = broken("settings")
    stats = shards[1].with_name("t.1.run.stats.json")
    record = json.loads(stats.read_text())
    record["provenance"]["max_words"] = 100
    stats.write_text(json.dumps(record))
    with pytest.raises(
        InputError, match=r"other settings than .*t\.0\.run\.stats\.json: \{'max_words': \(300, 100\)\}"
    ):
        merge_shards(first_stage, shards, tmp_path / "m.run")

    first_stage, shards = broken("tag")
    shards[1].write_text(shards[1].read_text().replace(" rankvicuna\n", " other\n"))
    with pytest.raises(InputError, match=r"run tag 'other' differs from 'rankvicuna' of .*t\.0\.run") as raised:
        merge_shards(first_stage, shards, tmp_path / "m.run")
    assert raised.value.path == str(shards[1])

    first_stage, shards = broken("extra")
    kept = first_stage.read_text().splitlines(keepends=True)
    dropped = kept[-1].split()[0]
    first_stage.write_text("".join(line for line in kept if line.split()[0] != dropped))
    with pytest.raises(InputError, match=rf"shards hold queries not in this run, e.g. \['{dropped}'\]"):
        merge_shards(first_stage, shards, tmp_path / "m.run")

    first_stage, shards = broken("foreign")
    log0, log1 = (s.with_name(s.name + ".log.jsonl") for s in shards)
    with open(log1, "ab") as f:
        f.write(log0.read_bytes().splitlines(keepends=True)[0])  # a window of a query of shard 0
    with pytest.raises(InputError, match=r"logged query '\d+' is not in the shard's run") as raised:
        merge_shards(first_stage, shards, tmp_path / "m.run")
    assert (raised.value.path, raised.value.line) == (str(log1), 28)


def test_shards_without_queries_merge(
    dl_store: Path, rankvicuna_dl19_log: Path, six_query_shards: Path, tmp_path: Path
):
    """8 shards of 6 queries: shards 6 and 7 are empty runs, which merge like any other."""
    shards = [tmp_path / f"t.{i}.run" for i in range(8)]
    for i, shard in enumerate(shards):
        rerank(dl_store, rankvicuna_dl19_log, shard, "--shard", f"{i}/8", "--max-queries", "6")
    assert shards[7].read_text() == ""
    first_stage, two = copy_shards(six_query_shards, tmp_path / "two")
    merged = merge_shards(first_stage, shards, tmp_path / "eight.run")
    assert merged["queries"] == 6 and merged["windows"] == 54
    merge_shards(first_stage, two, tmp_path / "two.run")
    assert (tmp_path / "eight.run").read_text() == (tmp_path / "two.run").read_text()
    assert log_records(tmp_path / "eight.run") == log_records(tmp_path / "two.run")
