"""A local stand-in for an OpenAI-compatible server (127.0.0.1), speaking `/v1/completions` and
`/v1/chat/completions` in the real wire format, for tests that must not need the network or a key.

It ranks a window's passages by a fixed rule (more words shared with the query first, ties in
prompt order), read from the prompt text or the last user message, so the same window always
gets the same ranking whichever endpoint, reasoning style or rate limit: the tests compare runs.

Behaviours, set per server (`StandIn(...)`):
    key             the API key it wants (Authorization: Bearer KEY); else 401, as OpenAI words it
    models          the model names it knows; else 404 (model_not_found)
    reasoning       None | "think" (the reply starts with <think>...</think>, naming decoy
                    identifiers in another order) | "field" (the thoughts in `reasoning_content`,
                    or `reasoning` as newer vLLM names it: `reasoning_key`, with
                    usage.completion_tokens_details.reasoning_tokens)
    limited         429 with Retry-After for every `limited`-th request (`retry_after` seconds)
    max_prompt_words  a context limit: longer prompts get HTTP 400 in vLLM's or OpenAI's words
                    (`context_wording`), counting one token per word
A reply that does not fit `max_tokens` is cut off (finish_reason "length"), inside the
reasoning when there is some. Every request is recorded (`requests`: path, body, auth).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PASSAGE = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
_QUERY = re.compile(r"Search Query: (.*)\.\n")


def tokens(text: str) -> int:
    """The stand-in's token count: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def ranking(prompt: str) -> list[int]:
    """The window's identifiers, best first: most words shared with the query, then prompt order."""
    query = set(_QUERY.search(prompt).group(1).lower().split())
    passages = [(int(i), set(text.lower().split())) for i, text in _PASSAGE.findall(prompt)]
    return [i for i, words in sorted(passages, key=lambda p: (-len(query & p[1]), p[0]))]


class StandIn:
    def __init__(
        self,
        key: str | None = None,
        models: tuple[str, ...] = ("teacher-model",),
        reasoning: str | None = None,
        reasoning_key: str = "reasoning_content",
        limited: int = 0,
        retry_after: str = "0",
        max_prompt_words: int | None = None,
        context_wording: str = "vllm",
    ):
        self.key, self.models, self.reasoning, self.reasoning_key = key, models, reasoning, reasoning_key
        self.limited, self.retry_after = limited, retry_after
        self.max_prompt_words, self.context_wording = max_prompt_words, context_wording
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, payload, headers = standin.answer(self.path, body, self.headers.get("Authorization"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, body: dict, auth: str | None) -> tuple[int, dict, dict[str, str]]:
        with self._lock:
            self.requests.append({"path": path, "body": body, "auth": auth})
            number = len(self.requests)
        status, payload, headers = self._answer(path, body, auth, number)
        with self._lock:
            self.statuses.append(status)
        return status, payload, headers

    def _answer(self, path: str, body: dict, auth: str | None, number: int) -> tuple[int, dict, dict[str, str]]:
        if self.key is not None and auth != f"Bearer {self.key}":
            shown = (auth or "")[-4:]
            message = f"Incorrect API key provided: sk-...{shown}. You can find your API key at the dashboard."
            return 401, _error(message, "invalid_request_error", "invalid_api_key"), {}
        if body.get("model") not in self.models:
            message = f"The model `{body.get('model')}` does not exist or you do not have access to it."
            return 404, _error(message, "invalid_request_error", "model_not_found"), {}
        if self.limited and number % self.limited == 0:
            return (
                429,
                _error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
                {"Retry-After": self.retry_after},
            )
        chat = path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if self.max_prompt_words is not None and len(prompt.split()) > self.max_prompt_words:
            return 400, self._too_long(len(prompt.split())), {}
        order = ranking(prompt)
        answer = " > ".join(f"[{i}]" for i in order)
        decoy = " > ".join(f"[{i}]" for i in reversed(order))
        thoughts = f"Passage [1] first? No: {decoy} reads better, and [{len(order) + 7}] is not here." * 3
        budget = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        spent = tokens(thoughts) if self.reasoning else 0
        finish = "stop"
        if spent >= budget:  # cut off while thinking
            thoughts, answer, finish = " ".join(thoughts.split()[: budget // 2]), "", "length"
            spent = tokens(thoughts)
        elif spent + tokens(answer) > budget:
            answer, finish = " ".join(answer.split()[: (budget - spent) // 4]), "length"
        usage = {"prompt_tokens": tokens(prompt), "completion_tokens": spent + tokens(answer)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if self.reasoning == "think":
            answer = f"<think>{thoughts}" + (f"</think>\n\n{answer}" if finish == "stop" or answer else "")
        message: dict[str, Any] = {"role": "assistant", "content": answer or None}
        if self.reasoning == "field":
            message[self.reasoning_key] = thoughts
            usage["completion_tokens_details"] = {"reasoning_tokens": spent}
        choice = {"index": 0, "finish_reason": finish, "logprobs": None}
        choice |= {"message": message} if chat else {"text": message["content"] or ""}
        kind = "chat.completion" if chat else "text_completion"
        answer_body = {"id": f"cmpl-{number}", "object": kind, "created": 0, "model": body["model"]}
        return 200, {**answer_body, "choices": [choice], "usage": usage}, {}

    def _too_long(self, words: int) -> dict:
        limit = self.max_prompt_words
        if self.context_wording == "openai":
            message = (
                f"This model's maximum context length is {limit} tokens. However, your messages resulted in "
                f"{words} tokens. Please reduce the length of the messages."
            )
            return _error(message, "invalid_request_error", "context_length_exceeded")
        message = (
            f"This model's maximum context length is {limit} tokens. However, your prompt contains {words} input "
            "tokens, which exceeds this limit even without any output tokens. Please reduce the length of the "
            "input prompt."
        )
        return {"error": {"message": message, "type": "BadRequestError", "param": "input_tokens", "code": 400}}

    def count(self, path_end: str) -> int:
        return sum(r["path"].endswith(path_end) for r in self.requests)


def _error(message: str, kind: str, code: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}
