"""Teacher fixtures: a tiny random Mistral with RankZephyr's real tokenizer, one vLLM engine
per test session, and DL19 queries from the shared data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")


def dl19_inputs(dl_store: Path) -> list[str]:
    """The `rerank` flags naming the DL19 BM25 run, its queries and the corpus store."""
    return [
        "--run",
        str(dl_store / "runs" / "retrieve_results_dl19.run"),
        "--queries",
        str(dl_store / "queries.tsv"),
        "--corpus",
        str(dl_store / "corpus"),
    ]


def log_records(run: Path) -> list[dict]:
    """The reply log of `run` without timings, in (qid, window) order: equal for equal work."""
    from pipeline.contract.reply_log import read_reply_log

    return sorted(
        (
            {k: v for k, v in r.items() if k != "seconds"}
            for _, r in read_reply_log(run.with_name(run.name + ".log.jsonl"))
        ),
        key=lambda r: (r["qid"], r["window"]),
    )


@pytest.fixture(scope="session")
def tiny_mistral(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.offline_models import build_tiny_mistral

    return build_tiny_mistral(tmp_path_factory.mktemp("models") / "tiny-mistral", seed=0)


@pytest.fixture(scope="session")
def vllm_backend(tiny_mistral: Path):
    """The one vLLM engine of the session (engine start ~40 s on 2 cores)."""
    from pipeline.teacher.backends.vllm_engine import VLLMBackend

    backend = VLLMBackend(str(tiny_mistral), dtype="float32")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def vllm_server(tiny_mistral: Path):
    """The one real vLLM OpenAI-compatible server of the session, serving the tiny model on
    127.0.0.1 (~60 s to healthy on 2 cores); its base URL. `vllm serve` is broken in vllm-cpu:
    the module entry point is what works."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_mistral)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager"]
    command += ["--max-model-len", "4096"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 600  # a start that slow is a broken start, not a slow machine
        while True:
            assert server.poll() is None, f"vLLM server exited ({server.returncode}): {' '.join(command)}"
            assert time.monotonic() < deadline, "vLLM server not healthy after 600 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10):
                    break
            except OSError:
                time.sleep(1)  # polling for readiness, not racing a deadline
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=60)


@pytest.fixture(scope="session")
def renderer(tiny_mistral: Path):
    from pipeline.teacher.render import PromptRenderer

    return PromptRenderer(str(tiny_mistral))


@pytest.fixture(scope="session")
def dl19(dl_store: Path):
    """(ranked candidate lists, queries, corpus store) of the DL19 BM25 top-100."""
    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.queries import read_queries
    from pipeline.contract.run import ranked_lists, read_trec_run

    lists = ranked_lists(read_trec_run(dl_store / "runs" / "retrieve_results_dl19.run"))
    return lists, read_queries(dl_store / "queries.tsv"), CorpusStore(dl_store / "corpus")


RANKVICUNA = "castorini/rank_vicuna_7b_v1"  # the model that wrote the recorded replies


@pytest.fixture(scope="session")
def rankvicuna_dl19_log(dl_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reply log of RankVicuna-7B's real DL19 replies as rank_llm recorded them
    (`distillm ingest replies`): replay finds every window by its prompt hash."""
    from pipeline.teacher.recorded_replies import ingest_files
    from tests.conftest import SHARED_DATA

    out = tmp_path_factory.mktemp("rankvicuna") / "rankvicuna-dl19.jsonl"
    dump = SHARED_DATA.parent / "reference" / "teacher_runs" / "rankvicuna7b" / "prompts_responses_dl19.json"
    ingest_files(dump, *dl19_inputs(dl_store)[1::2], "rank_vicuna", RANKVICUNA, out)
    return out
