"""Any OpenAI-compatible server (OpenAI, the providers that copy its API, vLLM's), through the
`openai` client library, with concurrent requests.

Two endpoints, chosen by whether the teacher has a tokenizer:

    chat=True   `{base_url}/chat/completions` with the window's chat messages. The server applies
                its model's chat template and counts the tokens (`usage`): hosted models, no
                tokenizer or model hub needed.
    chat=False  `{base_url}/completions` with the prompt already rendered by our tokenizer's chat
                template (`--tokenizer`), so the server sees exactly the tokens the local
                engines see (vLLM's server, FIRST ranking).

The library's own retries are off (`max_retries=0`); ours apply: 429 and 5xx answers and dropped
connections are retried with exponential backoff, or after the wait a Retry-After header asks
for (seconds or an HTTP date), at most `max_retry_wait` seconds. Some answers end the run at
once with one line that says what to fix (`ServiceError`): 401/403 (the key in OPENAI_API_KEY,
never its value), 404 (the model and the URL), a server that refuses the connection or cannot be
resolved before it ever answered (the URL). A 400 saying the prompt exceeds the model's context
is not an error: the reply carries it (`Reply.context_error`) and the driver shrinks the
window's passages and asks again (`pipeline.teacher.replies.shrunk_words`).

Reasoning models: a server's reasoning parser (vLLM `--reasoning-parser`, and hosted reasoning
models) returns the thoughts apart from the answer (`reasoning_content`, or `reasoning` in newer
vLLM); they come back as `Reply.reasoning`, with `usage.completion_tokens_details.reasoning_tokens`
when the server counts them. Thoughts inside the text (`<think>...</think>`) stay in the text.

A FIRST request (`--ranking first`, completions only) asks for one token and the top `logprobs`
(as many as the window has identifiers, the most OpenAI-style servers allow by default);
identifiers not among them are appended by the parser and counted as missing. A server that
returns no log-probabilities is refused with an error: it cannot rank a FIRST window.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from pipeline.infra.errors import ServiceError
from pipeline.infra.retry_after import retry_after_seconds
from pipeline.teacher.backends import Reply, Request

# httpx logs every request at INFO and openai its options at DEBUG: neither belongs in a
# teacher's log (thousands of lines), and nothing that could hold the key may reach it
for _name in ("httpx", "httpx2", "openai"):
    logging.getLogger(_name).setLevel(logging.WARNING)

KEY_VARIABLE = "OPENAI_API_KEY"
CONNECT_TIMEOUT = 10.0  # seconds to open a connection: an unreachable server is named within seconds

# How OpenAI and vLLM word a prompt longer than the model's context (HTTP 400)
_CONTEXT_ERROR = re.compile(
    r"maximum context length|maximum model length|context_length_exceeded|context window|reduce the length",
    re.IGNORECASE,
)


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        concurrency: int = 32,
        retries: int = 5,
        timeout: float = 600.0,
        max_retry_wait: float = 300.0,
        chat: bool = False,
        backoff: float = 0.5,
    ):
        import openai

        self._openai = openai
        self.model, self.chat = model, chat
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + ("/chat/completions" if chat else "/completions")
        self.retries, self.max_retry_wait, self.backoff = retries, max_retry_wait, backoff
        self.waits: list[float] = []  # every retry's wait, in seconds (provenance: how rate-limited a run was)
        self._key = os.environ.get(KEY_VARIABLE, "")
        # a local server needs no key, but the library insists on one: a placeholder is sent then
        self.client = openai.OpenAI(
            api_key=self._key or "none",
            base_url=self.base_url,
            timeout=openai.Timeout(timeout, connect=CONNECT_TIMEOUT),
            max_retries=0,
        )
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.futures: set[Future] = set()
        self._answered = threading.Event()  # the server has answered once: later connection errors are retried
        self._closing = threading.Event()
        self._about = {
            "backend": "openai",
            "base_url": self.base_url,
            "endpoint": "chat/completions" if chat else "completions",
            "model": model,
            "concurrency": concurrency,
            "openai": openai.__version__,
        }

    def submit(self, request: Request) -> None:
        self.futures.add(self.pool.submit(self._complete, request))

    def _complete(self, request: Request) -> Reply:
        openai = self._openai
        for attempt in range(self.retries + 1):
            pause = min(30.0, self.backoff * 2**attempt)  # exponential backoff, unless the server says how long
            try:
                reply = self._call(request)
                self._answered.set()
                return reply
            except openai.APIStatusError as e:
                self._answered.set()
                status, message = e.status_code, self._server_message(e)
                if status == 400 and _CONTEXT_ERROR.search(message):
                    return Reply(request.key, "", 0, context_error=message)
                if status in (401, 403):
                    raise ServiceError(self._refused_key(status)) from None
                if status == 404:
                    raise ServiceError(
                        f"{self.url}: HTTP 404: no model {self.model!r} at this URL (check --model and --base-url; "
                        f"the server says: {message})"
                    ) from None
                if (status != 429 and status < 500) or attempt == self.retries:
                    tries = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise ServiceError(
                        f"{self.url}: HTTP {status} for query {request.qid} window {request.window}{tries}: {message}"
                    ) from None
                asked = retry_after_seconds(e.response.headers.get("Retry-After"), self.max_retry_wait)
                pause = pause if asked is None else asked
            except openai.APIConnectionError as e:
                cause = _cause(e)
                if not self._answered.is_set() and not isinstance(e, openai.APITimeoutError):
                    # never answered: a wrong URL or a server not started, not a passing failure
                    raise ServiceError(f"cannot connect to {self.base_url}: {cause} (is the server running?)") from None
                if attempt == self.retries:
                    raise ServiceError(f"{self.url}: {cause} (after {attempt + 1} attempts)") from None
            self.waits.append(pause)
            if self._closing.wait(pause):  # closed while waiting: the run is over, do not hold it up
                raise ServiceError(f"{self.url}: closed while retrying query {request.qid} window {request.window}")
        raise AssertionError("unreachable")

    def _call(self, request: Request) -> Reply:
        if self.chat:
            if request.identifiers:
                raise ServiceError("--ranking first needs the completions endpoint: pass --tokenizer")
            answer = self.client.chat.completions.create(
                model=self.model,
                messages=list(request.messages),
                max_completion_tokens=request.max_tokens,
                temperature=0.0,
            )
            message = answer.choices[0].message
            reasoning = getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None)
            return self._reply(request, message.content or "", answer.usage, reasoning)
        extra = {"logprobs": len(request.identifiers)} if request.identifiers else {}
        answer = self.client.completions.create(
            model=self.model, prompt=request.prompt, max_tokens=request.max_tokens, temperature=0.0, **extra
        )
        choice = answer.choices[0]
        logprobs = self._first_logprobs(choice, request) if request.identifiers else None
        return self._reply(request, choice.text or "", answer.usage, None, logprobs)

    @staticmethod
    def _reply(
        request: Request, text: str, usage: Any, reasoning: str | None, logprobs: dict[str, float] | None = None
    ) -> Reply:
        details = getattr(usage, "completion_tokens_details", None)
        return Reply(
            request.key,
            text,
            int(getattr(usage, "completion_tokens", 0) or 0),
            logprobs=logprobs,
            reasoning=reasoning or None,
            reasoning_tokens=getattr(details, "reasoning_tokens", None),
            prompt_tokens=getattr(usage, "prompt_tokens", None),
        )

    def _first_logprobs(self, choice: Any, request: Request) -> dict[str, float]:
        """The window's identifiers among the first token's top log-probabilities."""
        top = getattr(choice.logprobs, "top_logprobs", None) or [None]
        if not isinstance(top[0], dict):
            raise ServiceError(
                f"{self.url}: no log-probabilities in the answer for query {request.qid} window {request.window}: "
                "--ranking first needs a server that returns them (e.g. vLLM's OpenAI server)"
            )
        return {name: float(top[0][name]) for name in request.identifiers if name in top[0]}

    def _refused_key(self, status: int) -> str:
        if not self._key:
            return f"{self.url}: HTTP {status}: the server wants an API key: set {KEY_VARIABLE}"
        return f"{self.url}: HTTP {status}: the server refused the API key in {KEY_VARIABLE}"

    def _server_message(self, error: Any) -> str:
        """The server's error message on one line, the key (should a server echo it) blanked."""
        body = error.body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            body = body["error"]
        message = body.get("message") if isinstance(body, dict) else None
        text = " ".join(str(message or error.message or "").split())[:500]
        return text.replace(self._key, "***") if self._key else text

    def poll(self) -> list[Reply]:
        if not self.futures:
            return []
        done, self.futures = wait(self.futures, return_when=FIRST_COMPLETED)
        return [future.result() for future in done]

    def close(self) -> None:
        self._closing.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def provenance(self) -> dict[str, Any]:
        return {**self._about, "retries": len(self.waits), "retry_wait_seconds": round(sum(self.waits), 3)}


def _cause(error: Exception) -> str:
    """The innermost reason of a connection error ("[Errno 111] Connection refused")."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error) or type(error).__name__
