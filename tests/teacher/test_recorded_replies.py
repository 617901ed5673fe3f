"""`distillm ingest replies`: rank_llm's recorded RankVicuna-7B windows become a reply log that
replays by prompt hash to rank_llm's own runs; wrong dumps fail naming the record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.contract.run import ranked_lists, read_trec_run
from pipeline.infra.errors import InputError
from pipeline.teacher.recorded_replies import ingest_files, read_rank_llm_dump
from tests.conftest import SHARED_DATA
from tests.teacher.conftest import RANKVICUNA, dl19_inputs

REFERENCE = SHARED_DATA.parent / "reference" / "teacher_runs" / "rankvicuna7b"
DUMP19 = REFERENCE / "prompts_responses_dl19.json"


def ingest(dl_store: Path, dump: Path, out: Path, **options) -> dict:
    run, queries, corpus = dl19_inputs(dl_store)[1::2]
    return ingest_files(dump, run, queries, corpus, options.pop("prompt", "rank_vicuna"), RANKVICUNA, out, **options)


def write_dump(records: list[dict], path: Path, tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r, indent=4) + ", \n" for r in records) + tail)
    return path


def dump_records(path: Path = DUMP19) -> list[dict]:
    return [{"prompt": r.prompt, "response": r.response} for r in read_rank_llm_dump(path)[0]]


def test_replay_of_an_ingested_dump_is_rank_llms_run_by_prompt_hash(dl_store: Path, tmp_path: Path):
    log = tmp_path / "rv.jsonl"
    counts = ingest(dl_store, DUMP19, log)
    assert counts == {
        "records": 387,
        "windows_matched_by_prompt": 387,
        "queries_complete": 43,
        "queries_incomplete": 0,
        "truncated_tail_characters": 0,
    }
    assert json.loads(log.with_name(log.name + ".settings.json").read_text())["model"] == RANKVICUNA
    out = tmp_path / "teacher" / "teacher.run"  # a folder no one made yet
    argv = ["rerank", *dl19_inputs(dl_store), "--backend", f"replay:{log}", "--prompt", "rank_vicuna"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    ours = ranked_lists(read_trec_run(out))
    theirs = ranked_lists(read_trec_run(REFERENCE / "run_dl19.txt"))
    assert sum(ours[q][:100] == theirs[q][:100] for q in theirs) == 43
    stats = json.loads(out.with_name("teacher.run.stats.json").read_text())
    assert stats["provenance"]["backend"]["matched"] == {"prompt_sha256": 387, "qid_window": 0}
    assert stats["provenance"]["model"] == RANKVICUNA  # from the ingested log's settings
    assert stats["windows"] == 387 and stats["repair_rate"] == 0


def test_window_major_dumps_match_too(dl_store: Path, tmp_path: Path):
    """rank_llm's batched mode logs window 0 of every query, then window 1, ..."""
    records = dump_records()
    window_major = [records[q * 9 + w] for w in range(9) for q in range(43)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ingest(dl_store, DUMP19, a)
    ingest(dl_store, write_dump(window_major, tmp_path / "wm.json"), b)
    key = lambda r: (r["qid"], r["window"])  # noqa: E731
    strip = lambda path: sorted(({**r, "source": None} for r in map(json.loads, path.open())), key=key)  # noqa: E731
    assert strip(a) == strip(b)


def test_a_dump_of_other_candidates_names_the_record(dl_store: Path, tmp_path: Path):
    with pytest.raises(InputError, match=r"record 1 \(character \d+\): its prompt matches no window of the run"):
        ingest(dl_store, REFERENCE / "prompts_responses_dl20.json", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_another_prompt_template_or_passage_budget_is_refused(dl_store: Path, tmp_path: Path):
    with pytest.raises(InputError, match=r"expected query '\d+' window 0; first difference at character \d+ .* Answer"):
        ingest(dl_store, DUMP19, tmp_path / "x.jsonl", prompt="rank_zephyr")
    with pytest.raises(InputError, match=r"record 1 .* first difference at character \d+"):
        ingest(dl_store, DUMP19, tmp_path / "x.jsonl", max_words=20)


def test_truncated_dumps(dl_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    records = dump_records()
    # a crash cut the 50th record short: the first 49 stand, the tail is counted
    text = "".join(json.dumps(r, indent=4) + ", \n" for r in records[:50])
    cut = write_dump([], tmp_path / "cut.json", text[: len(text) - 500])
    with pytest.raises(InputError, match=r"49 records cover 5 of 43 queries of the run; query '\d+' has 4 of 9"):
        ingest(dl_store, cut, tmp_path / "x.jsonl")
    counts = ingest(dl_store, cut, tmp_path / "partial.jsonl", partial=True)
    assert counts["records"] == 49 and counts["queries_complete"] == 5 and counts["truncated_tail_characters"] > 0
    # a replay of the partial log stops at the first window it lacks, naming it
    argv = ["rerank", *dl19_inputs(dl_store), "--backend", f"replay:{tmp_path / 'partial.jsonl'}"]
    assert main([*argv, "--prompt", "rank_vicuna", "--out", str(tmp_path / "t.run"), "--no-progress"]) == 2
    assert "partial.jsonl: no logged reply for query" in capsys.readouterr().err
    assert not (tmp_path / "t.run").exists()


def test_replies_for_queries_not_in_the_run_are_an_error(dl_store: Path, tmp_path: Path):
    with pytest.raises(InputError, match=r"record 46 .* every window of the run is matched already"):
        ingest(dl_store, DUMP19, tmp_path / "x.jsonl", max_queries=5)


def test_malformed_records_and_bytes_are_named(tmp_path: Path):
    bad = write_dump([{"prompt": "p", "response": "[1]"}, {"prompt": "p"}], tmp_path / "bad.json")
    with pytest.raises(InputError, match=r"bad.json: record 2 \(character \d+\): expected an object with"):
        read_rank_llm_dump(bad)
    broken = tmp_path / "broken.json"
    broken.write_text('{"prompt": "p", "response": "[1]"}, {"prompt": "p" "response": "[1]"}, {"prompt": "q"}')
    with pytest.raises(InputError, match=r"record 2 \(character 36\): not valid JSON"):
        read_rank_llm_dump(broken)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"prompt": "caf\xe9", "response": "[1]"}')
    with pytest.raises(InputError, match=r"latin.json: byte 15: not UTF-8"):
        read_rank_llm_dump(latin)
