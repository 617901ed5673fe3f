"""Backends on the same prompts: transformers and a real vLLM OpenAI server against vLLM offline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline.teacher.backends import Request
from pipeline.teacher.backends.openai_server import OpenAIBackend
from pipeline.teacher.prompts import load_prompt
from pipeline.teacher.reply_log import read_reply_log
from pipeline.teacher.rerank import Teacher, TeacherSettings


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


@pytest.mark.timeout(1800)
@pytest.mark.slow
@pytest.mark.engine
def test_openai_backend_against_a_real_vllm_server(vllm_replies, tiny_mistral, renderer, dl19, tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(tiny_mistral),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            "4096",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 900  # ~60 s to healthy on 2 cores; 15 min on a very slow machine
        while True:
            assert server.poll() is None, "vLLM server exited"
            assert time.monotonic() < deadline, "vLLM server not healthy after 900 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10):
                    break
            except OSError:
                time.sleep(2)
        backend = OpenAIBackend(str(tiny_mistral), base_url=f"http://127.0.0.1:{port}/v1", concurrency=4)
        replies = run(backend, renderer, dl19, tmp_path / "log.jsonl")
    finally:
        server.terminate()
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=60)
    assert replies == vllm_replies


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
    monkeypatch.setattr(time, "sleep", lambda s: None)  # backoff without waiting
    _Flaky.calls = []
    server = HTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", concurrency=1)
        backend.submit(Request("q\t0", "PROMPT", [], "sha", 7, "q", 0))
        (reply,) = backend.poll()
        backend.close()
    finally:
        server.shutdown()
    assert (reply.text, reply.completion_tokens) == ("[2] > [1]", 5)
    assert len(_Flaky.calls) == 3
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


def complete_against_rate_limits(retry_after: list[str], **options) -> list[tuple[float, float]]:
    """One completion from a server answering 429 with these Retry-After values first; the arrival times."""
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
    return _RateLimited.arrived


def test_openai_backend_waits_the_seconds_retry_after_asks_for():
    # without the header the first retry comes after 0.5 s; the server asks for 2 s
    (first, _), (second, _) = complete_against_rate_limits(["2"])
    assert second - first >= 2.0


def test_openai_backend_waits_until_the_http_date_retry_after_names():
    from email.utils import formatdate, parsedate_to_datetime

    date = formatdate(time.time() + 4, usegmt=True)  # whole seconds: at least 3 s from now
    (_, second) = complete_against_rate_limits([date])[1]
    assert second >= parsedate_to_datetime(date).timestamp() - 0.1  # 0.1 s for float rounding; never early


def test_retry_after_is_capped_and_unreadable_values_fall_back_to_backoff(monkeypatch: pytest.MonkeyPatch):
    from email.utils import formatdate

    from pipeline.retry_after import retry_after_seconds

    assert retry_after_seconds("3600", cap=300.0) == 300.0
    assert retry_after_seconds("-4", cap=300.0) == 0.0
    assert retry_after_seconds(formatdate(time.time() - 60, usegmt=True), cap=300.0) == 0.0  # already past
    assert retry_after_seconds("soon", cap=300.0) is None and retry_after_seconds(None, cap=300.0) is None
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the waits are recorded, not waited
    complete_against_rate_limits(["3600", "soon", "0"], max_retry_wait=7.0)
    assert slept == [7.0, 1.0, 0.0]  # capped; unreadable: the backoff of the 2nd retry; 0: at once
