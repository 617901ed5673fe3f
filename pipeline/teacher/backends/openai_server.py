"""Any OpenAI-compatible completions server (e.g. vLLM's), with concurrent requests.

The prompt is sent as text, already rendered with the model's chat template, to
`{base_url}/completions`, so the server sees exactly the prompt the other backends see.
429 and 5xx answers and connection errors are retried with exponential backoff.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from pipeline.teacher.backends import Reply, Request


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        concurrency: int = 32,
        retries: int = 5,
        timeout: float = 600.0,
    ):
        self.model = model
        self.url = base_url.rstrip("/") + "/completions"
        self.retries = retries
        self.timeout = timeout
        self.api_key = os.environ.get("OPENAI_API_KEY", "")
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.futures: set[Future] = set()
        self._about = {"backend": "openai", "base_url": base_url, "model": model, "concurrency": concurrency}

    def submit(self, request: Request) -> None:
        self.futures.add(self.pool.submit(self._complete, request))

    def _complete(self, request: Request) -> Reply:
        body = json.dumps(
            {"model": self.model, "prompt": request.prompt, "max_tokens": request.max_tokens, "temperature": 0.0}
        ).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as response:
                    answer = json.load(response)
                text = answer["choices"][0]["text"]
                tokens = int(answer.get("usage", {}).get("completion_tokens", 0))
                return Reply(request.key, text, tokens)
            except urllib.error.HTTPError as e:
                if (e.code != 429 and e.code < 500) or attempt == self.retries:
                    detail = e.read().decode(errors="replace")[:500]
                    raise RuntimeError(f"{self.url}: HTTP {e.code} for query {request.qid}: {detail}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if attempt == self.retries:
                    raise RuntimeError(f"{self.url}: {e} (after {attempt + 1} attempts)") from None
            time.sleep(min(30.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def poll(self) -> list[Reply]:
        if not self.futures:
            return []
        done, self.futures = wait(self.futures, return_when=FIRST_COMPLETED)
        return [future.result() for future in done]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def provenance(self) -> dict[str, Any]:
        return dict(self._about)
