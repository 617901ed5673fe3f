"""Hosted teachers: `--backend openai` against a local stand-in of an OpenAI-compatible server
(tests/teacher/openai_standin.py), on real DL19 candidates, through the command line.

Chat mode (no --tokenizer), reasoning replies, rate limits, context-length refusals, cost and
its budget, the dry run, and every failure a user meets first: each one line, no traceback.
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.contract.corpus import CorpusStore
from pipeline.contract.reply_log import read_reply_log
from pipeline.teacher.prompts import build_messages, load_prompt
from pipeline.teacher.render import messages_sha256
from tests.teacher.conftest import dl19_inputs, log_records
from tests.teacher.openai_standin import StandIn, ranking

MODEL = "teacher-model"
N_QUERIES = 2  # x 9 windows


def rerank(dl_store: Path, url: str, out: Path, *extra: str) -> int:
    argv = ["rerank", *dl19_inputs(dl_store), "--backend", "openai", "--model", MODEL, "--base-url", url]
    return main([*argv, "--max-queries", str(N_QUERIES), "--out", str(out), "--no-progress", *extra])


def stats_of(out: Path) -> dict:
    return json.loads(out.with_name(out.name + ".stats.json").read_text())


def records_of(out: Path) -> list[dict]:
    return [r for _, r in read_reply_log(out.with_name(out.name + ".log.jsonl"))]


def test_chat_mode_sends_the_templates_messages_and_counts_the_servers_usage(
    dl_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123")
    out = tmp_path / "teacher.run"
    with StandIn(key="sk-test-0123") as server:
        assert rerank(dl_store, server.url, out, "--price-in", "0.15", "--price-out", "0.6") == 0
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert {r["auth"] for r in server.requests} == {"Bearer sk-test-0123"}
    records, stats = records_of(out), stats_of(out)
    assert len(records) == len(server.requests) == 9 * N_QUERIES
    # a window's request: the template's messages, as every other backend builds them
    first = server.requests[0]["body"]
    record = next(r for r in records if r["window"] == 0)
    corpus = CorpusStore(dl_store / "corpus")
    passages = {p.doc_id: (p.text, p.title) for p in corpus.passages(record["doc_ids"])}
    queries = dict(line.split("\t", 1) for line in (dl_store / "queries.tsv").read_text().splitlines())
    messages = build_messages(
        load_prompt("rank_zephyr"), queries[record["qid"]], [passages[d] for d in record["doc_ids"]], 300
    )
    assert any(r["body"]["messages"] == messages for r in server.requests)
    assert first["model"] == MODEL and first["temperature"] == 0.0 and first["max_completion_tokens"] == 4 * 20 + 2
    # the stand-in's ranking, applied window by window: nothing repaired
    assert all(r["permutation"] == ranking(m["body"]["messages"][-1]["content"]) for r, m in _paired(records, server))
    assert stats["repairs"] == dict.fromkeys(stats["repairs"], 0)
    # tokens as the server counted them (usage), the cost at the given prices
    assert stats["prompt_tokens"] == sum(r["prompt_tokens"] for r in records) > 9 * N_QUERIES * 500
    assert stats["completion_tokens"] == sum(r["completion_tokens"] for r in records) > 0
    expected = (stats["prompt_tokens"] * 0.15 + stats["completion_tokens"] * 0.6) / 1e6
    assert stats["cost"]["total"] == pytest.approx(expected, abs=1e-6)
    assert stats["provenance"]["tokenizer"] is None
    assert stats["provenance"]["backend"]["endpoint"] == "chat/completions"
    assert "sk-test-0123" not in json.dumps(stats)


def permutations(records: list[dict]) -> dict[tuple[str, int], list[int]]:
    """Each window's permutation (queries run concurrently: the log's order varies)."""
    return {(r["qid"], r["window"]): r["permutation"] for r in records}


def _paired(records: list[dict], server: StandIn) -> list[tuple[dict, dict]]:
    """Each record with the request that answered it (the same messages, the same hash)."""
    requests = {messages_sha256(r["body"]["messages"]): r for r in server.requests}
    return [(r, requests[r["prompt_sha256"]]) for r in records]


@pytest.mark.parametrize(
    ("reasoning", "key"), [("think", None), ("field", "reasoning_content"), ("field", "reasoning")]
)
def test_a_server_that_reasons_first_or_rate_limits_gives_the_same_rankings(
    dl_store: Path, tmp_path: Path, reasoning: str, key: str | None
):
    plain = tmp_path / "plain" / "teacher.run"
    with StandIn() as server:
        assert rerank(dl_store, server.url, plain) == 0
    out = tmp_path / "reasoning" / "teacher.run"
    # every 4th request is rate-limited (Retry-After: 0); the thoughts name other identifiers
    with StandIn(reasoning=reasoning, reasoning_key=key or "reasoning_content", limited=4) as server:
        assert rerank(dl_store, server.url, out, "--max-new-tokens", "1000") == 0
    assert out.read_text() == plain.read_text()
    records, stats = records_of(out), stats_of(out)
    assert permutations(records) == permutations(records_of(plain))
    assert stats["windows_repaired"] == 0
    limited = server.statuses.count(429)
    assert limited >= (9 * N_QUERIES) // 4 and stats["provenance"]["backend"]["retries"] == limited
    # the thoughts are kept, and their tokens counted apart (within the completion tokens)
    if reasoning == "think":
        assert all(r["reply"].startswith("<think>") and "</think>" in r["reply"] for r in records)
        assert "reasoning" not in records[0]
    else:
        assert all(r["reasoning"].startswith("Passage [1] first?") for r in records)
    assert all(0 < r["reasoning_tokens"] < r["completion_tokens"] for r in records)
    assert stats["reasoning_tokens"] == sum(r["reasoning_tokens"] for r in records)


@pytest.mark.parametrize("reasoning", ["think", "field"])
def test_a_reply_cut_off_inside_its_reasoning_is_a_counted_repair(dl_store: Path, tmp_path: Path, reasoning: str):
    out = tmp_path / "teacher.run"
    with StandIn(reasoning=reasoning) as server:  # the default budget (82 tokens) ends inside the thoughts
        assert rerank(dl_store, server.url, out) == 0
    records, stats = records_of(out), stats_of(out)
    assert stats["repairs"]["reasoning_cut_off"] == stats["windows"] == 9 * N_QUERIES
    assert stats["ids_missing"] == 20 * stats["windows"]
    assert all(r["permutation"] == list(range(1, 21)) for r in records)  # decoys never read: order kept
    first_stage = [
        line.split()[2] for line in (dl_store / "runs" / "retrieve_results_dl19.run").read_text().splitlines()
    ]
    assert [line.split()[2] for line in out.read_text().splitlines()] == first_stage[: 100 * N_QUERIES]


@pytest.mark.parametrize("wording", ["vllm", "openai"])
def test_context_length_refusals_shrink_the_window_and_replay_and_resume_agree(
    dl_store: Path, tmp_path: Path, wording: str
):
    whole = tmp_path / "whole" / "teacher.run"
    with StandIn(max_prompt_words=900, context_wording=wording) as server:
        assert rerank(dl_store, server.url, whole) == 0
    refused = server.statuses.count(400)
    records, stats = records_of(whole), stats_of(whole)
    assert refused > 0 and stats["context_length_retries"] == refused
    assert stats["windows_with_shrunk_passages"] > 0 and stats["windows_repaired"] == 0
    retried = [r for r in records if "context_retries" in r]
    assert all(r["context_retries"][0]["words_per_passage"] == 300 for r in retried)
    assert all(r["words_per_passage"] < r["context_retries"][-1]["words_per_passage"] for r in retried)
    assert "maximum context length is 900 tokens" in retried[0]["context_retries"][0]["error"]
    # replay: no server at all; the refusals are replayed and shrink the same way
    replayed = tmp_path / "replayed" / "teacher.run"
    log = whole.with_name("teacher.run.log.jsonl")
    assert rerank(dl_store, "http://127.0.0.1:9/v1", replayed, "--backend", f"replay:{log}") == 0
    assert replayed.read_text() == whole.read_text()
    words = {(r["qid"], r["window"]): r["words_per_passage"] for r in records}
    assert {(r["qid"], r["window"]): r["words_per_passage"] for r in records_of(replayed)} == words
    # resume after a crash 5 windows in (the 6th line cut short): only the rest is asked for
    crashed = tmp_path / "crashed" / "teacher.run"
    crashed.parent.mkdir()
    lines = log.read_text().splitlines(keepends=True)
    crashed.with_name(log.name).write_text("".join(lines[:5]) + lines[5][:50])
    settings = log.with_name(log.name + ".settings.json")
    crashed.with_name(settings.name).write_text(settings.read_text())
    with StandIn(max_prompt_words=900, context_wording=wording) as server:
        assert rerank(dl_store, server.url, crashed) == 0
    assert stats_of(crashed)["windows_resumed_from_log"] == 5
    assert server.statuses.count(200) == 9 * N_QUERIES - 5
    assert crashed.read_text() == whole.read_text() and log_records(crashed) == log_records(whole)


def test_chat_runs_shard_merge_and_reuse_like_any_other(dl_store: Path, tmp_path: Path):
    first_stage = tmp_path / "first-stage.run"  # the run's first queries: merge-shards wants them all
    lines = (dl_store / "runs" / "retrieve_results_dl19.run").read_text().splitlines(keepends=True)
    first_stage.write_text("".join(lines[: 100 * N_QUERIES]))
    prices = ["--price-in", "1", "--price-out", "4", "--run", str(first_stage)]  # the last --run counts
    whole = tmp_path / "whole" / "teacher.run"
    with StandIn(max_prompt_words=900) as server:
        assert rerank(dl_store, server.url, whole, *prices) == 0
        shards = [tmp_path / "shards" / f"teacher.{i}.run" for i in range(2)]
        for i, shard in enumerate(shards):
            assert rerank(dl_store, server.url, shard, *prices, "--shard", f"{i}/2") == 0
    merged = tmp_path / "merged" / "teacher.run"
    assert main(["merge-shards", "--run", str(first_stage), "--out", str(merged), *map(str, shards)]) == 0
    assert merged.read_text() == whole.read_text()
    cost = stats_of(merged)["cost"]
    assert cost["total"] == pytest.approx(stats_of(whole)["cost"]["total"])
    assert stats_of(merged)["context_length_retries"] == stats_of(whole)["context_length_retries"] > 0
    # another output reusing the whole run's log: no server needed (the refusals are reused too)
    again = tmp_path / "again" / "teacher.run"
    log = whole.with_name("teacher.run.log.jsonl")
    assert rerank(dl_store, f"http://127.0.0.1:{free_port()}/v1", again, *prices, "--reuse", str(log)) == 0
    stats = stats_of(again)
    assert again.read_text() == whole.read_text() and stats["windows_reused"] == 9 * N_QUERIES
    assert stats["cost"]["total"] == 0  # nothing was paid for in this run


@pytest.mark.engine
def test_with_a_tokenizer_the_completions_endpoint_gets_the_rendered_prompt(
    dl_store: Path, tmp_path: Path, tiny_mistral: Path, renderer
):
    chat = tmp_path / "chat" / "teacher.run"
    with StandIn() as server:
        assert rerank(dl_store, server.url, chat) == 0
    out = tmp_path / "completions" / "teacher.run"
    with StandIn() as server:
        assert rerank(dl_store, server.url, out, "--tokenizer", str(tiny_mistral)) == 0
    assert {r["path"] for r in server.requests} == {"/v1/completions"}
    assert all(r["body"]["prompt"].startswith("<|system|>\n") for r in server.requests)
    assert out.read_text() == chat.read_text()  # the same windows, the same rankings
    # prompt tokens are our tokenizer's count of exactly the text sent
    rendered = sorted(len(renderer._tokenize(r["body"]["prompt"])) for r in server.requests)
    assert sorted(r["prompt_tokens"] for r in records_of(out)) == rendered


def test_max_cost_stops_cleanly_and_a_rerun_resumes(dl_store: Path, tmp_path: Path, capsys):
    whole = tmp_path / "whole" / "teacher.run"
    with StandIn() as server:
        assert rerank(dl_store, server.url, whole) == 0
    prices = ["--price-in", "1", "--price-out", "1"]  # per million: a window costs ~0.0015
    out = tmp_path / "budget" / "teacher.run"
    with StandIn() as server:
        assert rerank(dl_store, server.url, out, *prices, "--max-cost", "0.005") == 3
    assert "stopped at --max-cost 0.005" in capsys.readouterr().err
    assert not out.exists()  # no run file until the run is complete
    done = len(records_of(out))
    assert 0 < done < 9 * N_QUERIES and len(server.requests) == done  # every answer paid for is logged
    with StandIn() as server:  # the same budget: nothing more is asked
        assert rerank(dl_store, server.url, out, *prices, "--max-cost", "0.005") == 3
    assert server.requests == []
    with StandIn() as server:
        assert rerank(dl_store, server.url, out, *prices, "--max-cost", "1") == 0
    assert len(server.requests) == 9 * N_QUERIES - done
    stats = stats_of(out)
    assert out.read_text() == whole.read_text() and stats["windows_resumed_from_log"] == done
    assert stats["cost"]["total"] == pytest.approx((stats["prompt_tokens"] + stats["completion_tokens"]) / 1e6)


def test_dry_run_counts_windows_tokens_and_cost_without_a_model(
    dl_store: Path, tmp_path: Path, tiny_mistral: Path, capsys
):
    out = tmp_path / "teacher.run"
    prices = ["--price-in", "2", "--price-out", "8"]
    # no server at all: nothing may be called
    assert rerank(dl_store, "http://127.0.0.1:9/v1", out, *prices, "--dry-run") == 0
    report = capsys.readouterr().out
    assert f"{N_QUERIES} queries, {9 * N_QUERIES} windows" in report and "4 characters per token" in report
    assert not out.exists() and not out.with_name("teacher.run.log.jsonl").exists()
    # with a tokenizer the prompt tokens are counted: close to what a real run sends
    assert rerank(dl_store, "http://127.0.0.1:9/v1", out, *prices, "--dry-run", "--tokenizer", str(tiny_mistral)) == 0
    report = capsys.readouterr().out
    estimated = int(re.search(r"prompt tokens: ([\d,]+)", report).group(1).replace(",", ""))
    completion = int(re.search(r"completion tokens: at most ([\d,]+)", report).group(1).replace(",", ""))
    with StandIn() as server:
        assert rerank(dl_store, server.url, out, "--tokenizer", str(tiny_mistral)) == 0
    sent = stats_of(out)["prompt_tokens"]
    assert abs(estimated - sent) < 0.05 * sent
    cost = float(report.rsplit("at most ", 1)[1])
    assert cost == pytest.approx((estimated * 2 + completion * 8) / 1e6, abs=1e-4)


# ---------------------------------------------------------------- failures: one line, no traceback
def distillm(
    dl_store: Path, out: Path, *extra: str, env: dict | None = None, unset: tuple = (), limit: int | None = None
) -> subprocess.CompletedProcess:
    """`python -m pipeline rerank ...` in a subprocess (with a file-size limit: a full disk)."""
    argv = [sys.executable, "-m", "pipeline", "rerank", *dl19_inputs(dl_store), "--backend", "openai"]
    argv += ["--max-queries", str(N_QUERIES), "--out", str(out), "--no-progress", *extra]

    def file_size_limit():  # writes past `limit` bytes fail (EFBIG): a disk that fills up mid-run
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=300,
        env={**{k: v for k, v in os.environ.items() if k not in unset}, **(env or {})},
        preexec_fn=file_size_limit if limit else None,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_failure_is_one_clear_line(dl_store: Path, tmp_path: Path):
    out = tmp_path / "teacher.run"
    with StandIn(key="sk-right-key") as server:
        model = ["--model", MODEL, "--base-url", server.url]
        result = distillm(dl_store, out, *model, env={"OPENAI_API_KEY": "sk-wrong-4242"})
        line = one_error_line(result)
        assert result.returncode == 1 and "HTTP 401" in line and "refused the API key in OPENAI_API_KEY" in line
        assert "sk-wrong-4242" not in result.stderr and "4242" not in result.stderr
        result = distillm(dl_store, out, *model, unset=("OPENAI_API_KEY",))
        assert result.returncode == 1 and "set OPENAI_API_KEY" in one_error_line(result)
        result = distillm(
            dl_store, out, "--model", "gpt-9", "--base-url", server.url, env={"OPENAI_API_KEY": "sk-right-key"}
        )
        line = one_error_line(result)
        assert result.returncode == 1 and "HTTP 404" in line and "'gpt-9'" in line and server.url in line
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = distillm(dl_store, out, "--model", MODEL, "--base-url", url)
    line = one_error_line(result)
    assert result.returncode == 1 and f"cannot connect to {url}" in line and "refused" in line
    result = distillm(dl_store, out, "--model", MODEL, "--tokenizer", str(tmp_path / "no-such-tokenizer"))
    line = one_error_line(result)
    assert result.returncode == 2 and "no-such-tokenizer" in line and "no such folder" in line


def test_a_full_disk_is_one_line_and_the_rerun_resumes(dl_store: Path, tmp_path: Path):
    whole = tmp_path / "whole" / "teacher.run"
    with StandIn(reasoning="think") as server:
        assert rerank(dl_store, server.url, whole, "--max-new-tokens", "1000") == 0
    out = tmp_path / "full" / "teacher.run"
    log = out.with_name("teacher.run.log.jsonl")
    with StandIn(reasoning="think") as server:
        flags = ["--model", MODEL, "--base-url", server.url, "--max-new-tokens", "1000"]
        result = distillm(dl_store, out, *flags, limit=12_000)  # the log fills up after a few windows
        line = one_error_line(result)
        assert result.returncode == 1 and str(log) in line and "rerun the same command" in line
        assert not out.exists()
        kept = len(records_of(out))
        assert 0 < kept < 9 * N_QUERIES
        assert distillm(dl_store, out, *flags).returncode == 0
    assert stats_of(out)["windows_resumed_from_log"] == kept
    assert out.read_text() == whole.read_text() and log_records(out) == log_records(whole)


# ---------------------------------------------------------------- the guide's commands are true
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "hosted-teachers.md"


def guide_commands() -> list[str]:
    """The `distillm` commands of the guide's bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    lines = [line.split("  #")[0].strip() for b in blocks for line in re.sub(r"\\\n\s*", "", b).splitlines()]
    return [line for line in lines if line.startswith("distillm ")]


def test_the_guides_commands_parse_and_its_dry_run_prints_what_it_says(dl_store: Path, tmp_path: Path, capsys):
    import shlex

    from pipeline.cli import build_parser

    commands = guide_commands()
    assert len(commands) >= 10
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])  # exits (SystemExit) on an unknown flag
    # the guide's data/hosted/ingest is the test's store (the same DL19 run, queries and passages)
    dry_run = shlex.split(next(c for c in commands if "--dry-run" in c))[1:]
    argv = [a.replace("data/hosted/ingest", str(dl_store)).replace("data/hosted", str(tmp_path)) for a in dry_run]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip()
    assert f"```text\n{printed}\n```" in GUIDE.read_text()
