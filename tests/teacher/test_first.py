"""FIRST single-token ranking (`--ranking first`) on real DL19 windows with the tiny Mistral,
which carries Mistral's real tokenizer: each window's order must be the one its identifiers'
log-probabilities give in a plain transformers forward pass over the same prompt."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline.cli import main
from pipeline.contract.reply_log import read_reply_log
from pipeline.infra.errors import InputError
from pipeline.teacher.backends import Request
from pipeline.teacher.backends.openai_server import OpenAIBackend
from pipeline.teacher.driver import Teacher
from pipeline.teacher.prompts import build_messages, identifiers, load_prompt
from pipeline.teacher.render import messages_sha256
from pipeline.teacher.replies import rank_by_logprobs
from pipeline.teacher.reuse import ReplayBackend, ReplyIndex, ReusingBackend
from pipeline.teacher.settings import TeacherSettings
from pipeline.teacher.windows import rerank
from tests.teacher.conftest import dl19_inputs, log_records

LETTERS = identifiers(20, "letters")


def run_first(backend, renderer, dl19, log_path: Path, n_queries: int = 2, **settings):
    lists, queries, corpus = dl19
    lists = dict(list(lists.items())[:n_queries])
    settings = TeacherSettings(model="tiny", prompt="rank_zephyr_alpha", ranking="first", **settings)
    teacher = Teacher(backend, renderer, settings, load_prompt(settings.prompt), corpus)
    out = teacher.run(lists, queries, log_path, progress=False)
    return lists, out, teacher.tally, [r for _, r in read_reply_log(log_path)]


def test_letters_are_single_tokens_after_the_opening_bracket_and_numbers_from_10_are_not(renderer):
    ids = renderer.first_token_ids(LETTERS)
    assert len(set(ids)) == 20
    assert renderer.tokenizer.convert_ids_to_tokens(ids) == LETTERS  # the bare letter pieces, no "▁A"
    assert len(renderer.first_token_ids(identifiers(9, "numbers"))) == 9
    with pytest.raises(ValueError, match="identifier '10' is not one token"):
        renderer.first_token_ids(identifiers(20, "numbers"))


def test_a_numbered_prompt_is_refused_for_first_windows_of_20(renderer, dl19):
    no_model = ReusingBackend(ReplyIndex(), None, "none")
    settings = TeacherSettings(model="tiny", ranking="first")
    with pytest.raises(
        ValueError, match=r"FIRST ranking needs single-token identifiers, e\.g\. --prompt rank_zephyr_alpha"
    ):
        Teacher(no_model, renderer, settings, load_prompt("rank_zephyr"), dl19[2])


@pytest.fixture(scope="module")
def vllm_first(vllm_backend, renderer, dl19, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("first") / "log.jsonl"
    return (log_path, *run_first(vllm_backend, renderer, dl19, log_path))


def forward_logprobs(model, renderer, dl19, record: dict) -> dict[str, float]:
    """The letters' log-probabilities as the next token after the record's prompt, from one
    plain forward pass (no padding, no engine)."""
    import torch

    _, queries, corpus = dl19
    passages = [(p.text, p.title) for p in corpus.passages(record["doc_ids"])]
    messages = build_messages(
        load_prompt("rank_zephyr_alpha"), queries[record["qid"]], passages, record["words_per_passage"]
    )
    assert messages_sha256(messages) == record["prompt_sha256"]  # the very prompt the engine saw
    text, ids = renderer.render(messages, opening="[")
    assert text.endswith("<|assistant|>\n[") and len(ids) == record["prompt_tokens"]
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    lp = torch.log_softmax(logits, dim=-1)
    letter_ids = renderer.first_token_ids(LETTERS)
    return {name: float(lp[i]) for name, i in zip(LETTERS, letter_ids, strict=True)}


def assert_same_order(order: list[int], logprobs: dict[str, float], tol: float) -> None:
    """`order` (0-based) ranks the letters by `logprobs`, up to ties within `tol`."""
    values = [logprobs[LETTERS[i]] for i in order]
    assert all(a >= b - tol for a, b in itertools.pairwise(values)), values


@pytest.mark.engine
def test_vllm_first_orders_windows_by_the_models_real_logits(vllm_first, tiny_mistral, renderer, dl19):
    import torch
    from transformers import AutoModelForCausalLM

    _, lists, out, tally, records = vllm_first
    assert tally.windows == len(records) == 18 and tally.early == 0
    # the fast path is really taken: one generated token per window, every letter scored
    assert all(r["completion_tokens"] == 1 and r["identifiers"] == "letters" for r in records)
    assert all(list(r["first_logprobs"]) == LETTERS and r["repairs"] == [] for r in records)
    assert all(r["permutation"] != list(range(1, 21)) for r in records)  # a real order, not the fallback
    model = AutoModelForCausalLM.from_pretrained(str(tiny_mistral), dtype=torch.float32).eval()
    for r in records[::3]:  # 6 windows of 2 queries, 3 rounds each
        direct = forward_logprobs(model, renderer, dl19, r)
        assert max(abs(direct[k] - r["first_logprobs"][k]) for k in LETTERS) < 1e-4
        assert_same_order([i - 1 for i in r["permutation"]], direct, tol=2e-4)
    # the driver's output is the pure sliding window with each window ranked by its logged logprobs
    by_docs = {tuple(r["doc_ids"]): r["first_logprobs"] for r in records}
    for qid, docs in lists.items():
        expected = rerank(docs, lambda ids: rank_by_logprobs(by_docs[tuple(ids)], len(ids), "letters").order)
        assert out[qid] == expected


@pytest.mark.engine
def test_transformers_first_agrees_with_vllm(vllm_first, tiny_mistral, renderer, dl19, tmp_path: Path):
    from pipeline.teacher.backends.hf_generate import TransformersBackend

    backend = TransformersBackend(str(tiny_mistral), batch_size=4)  # left-padded batches of 4 windows
    _, _, _, records = run_first(backend, renderer, dl19, tmp_path / "log.jsonl")
    vllm_records = {(r["qid"], r["window"]): r for r in vllm_first[4]}
    for r in records:
        theirs = vllm_records[r["qid"], r["window"]]
        assert r["doc_ids"] == theirs["doc_ids"] and r["completion_tokens"] == 1
        assert max(abs(r["first_logprobs"][k] - theirs["first_logprobs"][k]) for k in LETTERS) < 1e-3
        assert_same_order([i - 1 for i in r["permutation"]], theirs["first_logprobs"], tol=2e-3)


@pytest.mark.engine
def test_replay_rederives_first_rankings_without_a_model(vllm_first, renderer, dl19, tmp_path: Path):
    log_path, _, out, _, _ = vllm_first
    replay = ReplayBackend(log_path)
    _, again, tally, records = run_first(replay, renderer, dl19, tmp_path / "again.jsonl")
    assert again == out and tally.windows == 18 and replay.matched["prompt_sha256"] == 18
    assert without_source(records) == without_source([r for _, r in read_reply_log(log_path)])
    # a FIRST reply cannot answer a full-generation window (same prompt, other decoding)
    lists, queries, corpus = dl19
    template = load_prompt("rank_zephyr_alpha")
    teacher = Teacher(ReplayBackend(log_path), renderer, TeacherSettings("tiny", "rank_zephyr_alpha"), template, corpus)
    with pytest.raises(InputError, match="a FIRST reply cannot answer"):
        teacher.run(dict(list(lists.items())[:1]), queries, tmp_path / "full.jsonl", progress=False)


def without_source(records: list[dict]) -> list[dict]:
    drop = ("seconds", "reused_from")
    return sorted(
        ({k: v for k, v in r.items() if k not in drop} for r in records), key=lambda r: (r["qid"], r["window"])
    )


@pytest.mark.engine
def test_a_first_run_resumes_and_is_never_continued_or_reused_by_a_full_one(dl_store, tiny_mistral, tmp_path: Path):
    def rerank_cli(out: Path, *extra: str) -> dict:
        # batch size 1: no padding, so a window's logits do not depend on the windows batched with it
        argv = ["rerank", *dl19_inputs(dl_store), "--backend", "transformers", "--batch-size", "1"]
        argv += ["--model", str(tiny_mistral)]
        argv += ["--max-queries", "1", "--prompt", "rank_zephyr_alpha", "--out", str(out), "--no-progress", *extra]
        assert main(argv) == 0
        return json.loads(out.with_name(out.name + ".stats.json").read_text())

    whole = tmp_path / "whole" / "teacher.run"
    stats = rerank_cli(whole, "--ranking", "first")
    assert stats["windows"] == 9 and stats["completion_tokens"] == 9
    assert stats["provenance"]["ranking"] == "first"
    # a crash after 4 windows, the 5th cut short: the same command resumes
    crashed = tmp_path / "crashed" / "teacher.run"
    crashed.parent.mkdir()
    lines = whole.with_name("teacher.run.log.jsonl").read_text().splitlines(keepends=True)
    crashed.with_name("teacher.run.log.jsonl").write_text("".join(lines[:4]) + lines[4][:40])
    settings = whole.with_name("teacher.run.log.jsonl.settings.json")
    crashed.with_name(settings.name).write_text(settings.read_text())
    stats = rerank_cli(crashed, "--ranking", "first")
    assert stats["windows_resumed_from_log"] == 4 and stats["windows_reused"] == 0
    assert crashed.read_text() == whole.read_text() and log_records(crashed) == log_records(whole)
    # full generation on the same out: the FIRST log is moved aside, not continued, and none
    # of its replies answers a full-generation window although every prompt is the same
    stats = rerank_cli(crashed, "--max-new-tokens", "4")
    assert stats["windows_resumed_from_log"] == 0 and stats["windows_reused"] == 0
    assert "ranking" not in stats["provenance"]
    assert len(list(crashed.parent.glob("teacher.run.log.jsonl.stale-*.settings.json"))) == 1


class _Completions(BaseHTTPRequestHandler):
    """An OpenAI completions endpoint answering one token with top log-probabilities (or none)."""

    top: ClassVar[dict | None] = None
    bodies: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Completions.bodies.append(body)
        choice = {"text": "C", "index": 0, "finish_reason": "length"}
        if _Completions.top is not None:
            choice["logprobs"] = {"tokens": ["C"], "token_logprobs": [-0.5], "top_logprobs": [_Completions.top]}
        data = json.dumps({"choices": [choice], "usage": {"completion_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_first_asks_for_top_logprobs_and_refuses_a_server_without_them():
    server = HTTPServer(("127.0.0.1", 0), _Completions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", concurrency=1)
    request = Request("q\t0", "...[", [], "sha", 1, "q", 0, identifiers=tuple("ABCD"))
    try:
        _Completions.top = {"C": -0.5, "A": -1.5, " B": -2.0, "x": -3.0}  # " B" is another token than "B"
        backend.submit(request)
        (reply,) = backend.poll()
        assert _Completions.bodies[-1]["logprobs"] == 4 and _Completions.bodies[-1]["max_tokens"] == 1
        assert reply.logprobs == {"A": -1.5, "C": -0.5}
        parsed = rank_by_logprobs(reply.logprobs, 4, "letters")
        assert parsed.order == [2, 0, 1, 3] and parsed.repairs == ("missing",) and parsed.n_missing == 2
        _Completions.top = None
        backend.submit(request)
        with pytest.raises(RuntimeError, match=r"no log-probabilities .* --ranking first needs a server"):
            backend.poll()
    finally:
        backend.close()
        server.shutdown()
