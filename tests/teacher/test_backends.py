"""Backends on the same prompts: transformers and a real vLLM OpenAI server against vLLM offline."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline.contract.reply_log import read_reply_log
from pipeline.teacher.backends import Request
from pipeline.teacher.backends.openai_server import OpenAIBackend
from pipeline.teacher.driver import Teacher
from pipeline.teacher.prompts import build_messages, load_prompt
from pipeline.teacher.render import PromptRenderer
from pipeline.teacher.settings import TeacherSettings


def run(backend, renderer, dl19, log_path: Path, n_queries: int = 2) -> dict[tuple[str, int], str]:
    lists, queries, corpus = dl19
    settings = TeacherSettings(model="tiny")
    teacher = Teacher(backend, renderer, settings, load_prompt(settings.prompt), corpus)
    teacher.run(dict(list(lists.items())[:n_queries]), queries, log_path, progress=False)
    return {(r["qid"], r["window"]): r["reply"] for _, r in read_reply_log(log_path)}


@pytest.fixture(scope="module")
def vllm_replies(vllm_backend, renderer, dl19, tmp_path_factory) -> dict[tuple[str, int], str]:
    return run(vllm_backend, renderer, dl19, tmp_path_factory.mktemp("vllm") / "log.jsonl")


@pytest.mark.engine
def test_transformers_backend_agrees_with_vllm(vllm_replies, tiny_mistral, renderer, dl19, tmp_path: Path):
    from pipeline.teacher.backends.hf_generate import TransformersBackend

    # batch 4 with left padding: the windows of 2 queries are generated together
    replies = run(TransformersBackend(str(tiny_mistral), batch_size=4), renderer, dl19, tmp_path / "log.jsonl")
    assert replies.keys() == vllm_replies.keys()
    same = sum(replies[k] == vllm_replies[k] for k in replies)
    assert same == len(replies), f"{same}/{len(replies)} replies equal"


@pytest.mark.engine
def test_transformers_continuous_batching_agrees_with_vllm(vllm_replies, tiny_mistral, renderer, dl19, tmp_path: Path):
    """transformers' continuous batching (paged KV cache, windows join and leave the running
    batch) gives the same greedy replies; the backend's own log says which mode ran."""
    from pipeline.teacher.backends.hf_generate import TransformersBackend

    backend = TransformersBackend(str(tiny_mistral), continuous=True)
    try:
        replies = run(backend, renderer, dl19, tmp_path / "log.jsonl")
        assert backend.provenance()["batching"] == "continuous"
        assert not backend.pending
        assert backend.poll() == []  # nothing pending: returns at once
    finally:
        backend.close()
    assert replies.keys() == vllm_replies.keys()
    same = sum(replies[k] == vllm_replies[k] for k in replies)
    assert same == len(replies), f"{same}/{len(replies)} replies equal"


@pytest.mark.timeout(900)  # the session's vLLM server starts in the first of these (~60 s on 2 cores)
@pytest.mark.engine
def test_openai_completions_against_a_real_vllm_server(
    vllm_replies, vllm_server, tiny_mistral, renderer, dl19, tmp_path
):
    """With a tokenizer: the rendered prompt to /completions, the same replies as vLLM offline."""
    backend = OpenAIBackend(str(tiny_mistral), base_url=vllm_server, concurrency=4)
    try:
        replies = run(backend, renderer, dl19, tmp_path / "log.jsonl")
    finally:
        backend.close()
    assert replies == vllm_replies


@pytest.mark.timeout(900)
@pytest.mark.engine
def test_openai_chat_against_a_real_vllm_server(vllm_server, vllm_backend, tiny_mistral, renderer, dl19, tmp_path):
    """Without a tokenizer: the messages to /chat/completions. The server applies the model's
    chat template itself and counts the tokens (usage); its replies are the offline engine's on
    the same tokens. The Zephyr template writes no BOS and vLLM's chat endpoint adds none (its
    completions endpoint, like our engines, does): the one difference between the two paths."""
    log_path = tmp_path / "log.jsonl"
    backend = OpenAIBackend(str(tiny_mistral), base_url=vllm_server, concurrency=4, chat=True)
    try:
        run(backend, PromptRenderer(None), dl19, log_path)
    finally:
        backend.close()
    records = [r for _, r in read_reply_log(log_path)]
    assert len(records) == 9 * 2 and all(r["completion_tokens"] > 0 for r in records)
    _, queries, corpus = dl19
    template = load_prompt("rank_zephyr")
    bos = renderer.tokenizer.bos_token_id
    for i, r in enumerate(records):
        passages = {p.doc_id: (p.text, p.title) for p in corpus.passages(r["doc_ids"])}
        messages = build_messages(template, queries[r["qid"]], [passages[d] for d in r["doc_ids"]], 300)
        text, ids = renderer.render(messages)
        assert ids[0] == bos and r["prompt_tokens"] == len(ids) - 1  # the server's count: our tokens, no BOS
        vllm_backend.submit(Request(f"chat-{i}", text, ids[1:], r["prompt_sha256"], 4 * 20 + 2, r["qid"], 0))
        (offline,) = vllm_backend.poll()
        assert offline.text == r["reply"], f"query {r['qid']} window {r['window']}"


class _Flaky(BaseHTTPRequestHandler):
    """An OpenAI completions endpoint that answers 503, then 429, then the completion."""

    calls: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Flaky.calls.append({"body": body, "auth": self.headers.get("Authorization")})
        status = {1: 503, 2: 429}.get(len(_Flaky.calls), 200)
        payload = {"choices": [{"text": "[2] > [1]"}], "usage": {"completion_tokens": 5}} if status == 200 else {}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_backend_retries_429_and_5xx(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    _Flaky.calls = []
    server = HTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:  # a backoff of 10 ms: 0.01 s, then 0.02 s
        url = f"http://127.0.0.1:{server.server_port}/v1"
        backend = OpenAIBackend("m", base_url=url, concurrency=1, backoff=0.01)
        backend.submit(Request("q\t0", "PROMPT", [], "sha", 7, "q", 0))
        (reply,) = backend.poll()
        backend.close()
    finally:
        server.shutdown()
    assert (reply.text, reply.completion_tokens) == ("[2] > [1]", 5)
    assert len(_Flaky.calls) == 3 and backend.waits == [0.01, 0.02]
    assert backend.provenance()["retries"] == 2
    assert _Flaky.calls[0]["body"] == {"model": "m", "prompt": "PROMPT", "max_tokens": 7, "temperature": 0.0}
    assert _Flaky.calls[0]["auth"] == "Bearer sk-test"


class _RateLimited(BaseHTTPRequestHandler):
    """An OpenAI completions endpoint that answers 429 with each of `retry_after` in turn (as the
    Retry-After header), then the completion; it records when each request arrived."""

    retry_after: ClassVar[list[str]] = []
    arrived: ClassVar[list[tuple[float, float]]] = []  # (time.monotonic(), time.time())

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        _RateLimited.arrived.append((time.monotonic(), time.time()))
        waits = _RateLimited.retry_after
        limited = len(_RateLimited.arrived) <= len(waits)
        payload = {} if limited else {"choices": [{"text": "[1] > [2]"}], "usage": {"completion_tokens": 5}}
        data = json.dumps(payload).encode()
        self.send_response(429 if limited else 200)
        if limited:
            self.send_header("Retry-After", waits[len(_RateLimited.arrived) - 1])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def complete_against_rate_limits(retry_after: list[str], **options) -> tuple[list[tuple[float, float]], list[float]]:
    """One completion from a server answering 429 with these Retry-After values first; the
    arrival times, and the waits the backend chose."""
    _RateLimited.retry_after, _RateLimited.arrived = retry_after, []
    server = HTTPServer(("127.0.0.1", 0), _RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", concurrency=1, **options)
        backend.submit(Request("q\t0", "PROMPT", [], "sha", 7, "q", 0))
        (reply,) = backend.poll()
        backend.close()
    finally:
        server.shutdown()
        server.server_close()
    assert reply.text == "[1] > [2]" and len(_RateLimited.arrived) == len(retry_after) + 1
    return _RateLimited.arrived, backend.waits


def test_openai_backend_waits_the_seconds_retry_after_asks_for():
    # without the header the first retry would come after 10 ms; the server asks for 1 s
    ((first, _), (second, _)), waits = complete_against_rate_limits(["1"], backoff=0.01)
    assert waits == [1.0] and second - first >= 1.0  # never early (a lower bound only: the machine may be slow)


def test_openai_backend_waits_until_the_http_date_retry_after_names():
    from email.utils import formatdate, parsedate_to_datetime

    date = formatdate(time.time() + 3, usegmt=True)  # whole seconds: at least 2 s from now
    arrived, waits = complete_against_rate_limits([date], backoff=0.01)
    assert 0 < waits[0] <= 3.0
    assert arrived[1][1] >= parsedate_to_datetime(date).timestamp() - 0.1  # 0.1 s for float rounding; never early


def test_retry_after_is_capped_and_unreadable_values_fall_back_to_backoff():
    from email.utils import formatdate

    from pipeline.infra.retry_after import retry_after_seconds

    assert retry_after_seconds("3600", cap=300.0) == 300.0
    assert retry_after_seconds("-4", cap=300.0) == 0.0
    assert retry_after_seconds(formatdate(time.time() - 60, usegmt=True), cap=300.0) == 0.0  # already past
    assert retry_after_seconds("soon", cap=300.0) is None and retry_after_seconds(None, cap=300.0) is None
    # tiny values, the waits the backend chose counted: capped; unreadable: the backoff of the
    # 2nd retry (2 x 10 ms); 0: at once
    _, waits = complete_against_rate_limits(["3600", "soon", "0"], max_retry_wait=0.05, backoff=0.01)
    assert waits == [0.05, 0.02, 0.0]
