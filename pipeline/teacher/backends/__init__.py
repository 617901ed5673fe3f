"""Teacher backends: thin adapters behind one small interface.

A backend takes rendered prompts (or, for a chat server, the messages) and returns replies,
in whatever order they complete:

    submit(request)  queue one window's prompt
    poll()           block until at least one submitted request has completed, or has
                     new text when it asked for partial replies, and return those
                     ([] when nothing is pending)
    cancel(key)      drop a submitted request  } optional: only backends that return
    stop_partial(key)  no more partial replies   } partial replies need them
                     for key (its final reply still comes)
    close()

The driver (`pipeline.teacher.driver`) submits a query's next window as soon as the
previous one returns, so an engine with continuous batching stays saturated. Backends
that can stream (vllm) also return a request's text so far (`Reply.finished` False) when
it asked for it (`Request.partial`): once the reply names the identifiers that the next
window carries over, the driver submits the next window early.

A FIRST request (`Request.identifiers` set, `--ranking first`) generates one token and the
reply carries the log-probabilities of the window's identifiers as that token
(`Reply.logprobs`): vllm and transformers return every identifier's, an OpenAI-compatible
server those among the top log-probabilities it returns (it must return some).

    vllm            vLLM's offline engine in-process (`--model`: a local folder or hub id)
    openai          any OpenAI-compatible server (`--base-url`): `/chat/completions` with the
                    window's messages (no tokenizer: hosted models), or `/completions` with
                    the rendered prompt (`--tokenizer`: exactly the tokens the others see)
    transformers    batched `generate` (no vLLM needed)
    replay:LOG      replies from an earlier reply log, no model (pipeline.teacher.reuse.ReplayBackend)

`pipeline.teacher.job.open_model_backend` opens one by its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Request:
    key: str  # "qid\twindow": unique per window of a run
    prompt: str  # the chat template applied to the messages
    prompt_ids: list[int]  # its token ids (empty when no tokenizer, e.g. replay)
    prompt_sha256: str
    max_tokens: int
    qid: str
    window: int
    regex: str | None = None  # constrained decoding (backends that support it)
    partial: bool = False  # also return the text so far while generating (backends that can)
    # FIRST: generate one token and return these identifiers' log-probabilities as that token
    identifiers: tuple[str, ...] = ()
    identifier_ids: tuple[int, ...] = ()  # their token ids (after the prompt's closing "[")
    messages: tuple[dict[str, str], ...] = ()  # the chat messages the prompt renders (chat servers send these)


@dataclass(frozen=True)
class Reply:
    key: str
    text: str
    completion_tokens: int
    finished: bool = True  # False: the text so far of a request still generating
    reused_from: str | None = None  # the reply log it was taken from, when no model was called
    logprobs: dict[str, float] | None = None  # FIRST: identifier -> log-probability as the first token
    # A reasoning model's thoughts when the server returns them apart from the text
    # (`reasoning_content` / `reasoning`); thoughts inside the text (`<think>...</think>`) stay there.
    reasoning: str | None = None
    reasoning_tokens: int | None = None  # as the server counted them (usage), when it did
    prompt_tokens: int | None = None  # as the server counted them (usage): a chat prompt has no local count
    # The server refused the prompt as longer than the model's context (its message): the
    # driver shrinks the window's passages and asks again (pipeline.teacher.replies.shrunk_words).
    context_error: str | None = None


class Backend(Protocol):
    name: str

    def submit(self, request: Request) -> None: ...

    def poll(self) -> list[Reply]: ...

    def close(self) -> None: ...

    def provenance(self) -> dict[str, Any]: ...
