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
        deadline = time.time() + 300
        while time.time() < deadline:
            assert server.poll() is None, "vLLM server exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(2)
        backend = OpenAIBackend(str(tiny_mistral), base_url=f"http://127.0.0.1:{port}/v1", concurrency=4)
        replies = run(backend, renderer, dl19, tmp_path / "log.jsonl")
    finally:
        server.terminate()
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
