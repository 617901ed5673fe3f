"""One window's request: its chat messages, what is sent for them, and its reply budget.

With a tokenizer the messages are fitted to the model's context (`--max-model-len` minus the
reply budget: passages shortened as rank_llm does) and rendered with its chat template; without
one (a chat server, or replay) they are built at the window's word budget and the server counts
the tokens. Either way the window is named by the hash of its messages (`prompt_sha256`), which
is what resuming, `--reuse` and replay look replies up by.

The result's `info` becomes part of the window's log record (`pipeline.teacher.records`):
prompt_sha256, words_per_passage, prompt_tokens (0 until a chat server counts them), and
`think_opened` when the rendered prompt ends inside an opened `<think>` (the model's reply then
starts with its reasoning).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from pipeline.teacher.backends import Request
from pipeline.teacher.identifiers import identifiers
from pipeline.teacher.prompts import PromptOverflow, PromptTemplate, build_messages, fit_messages
from pipeline.teacher.render import PromptRenderer, messages_json, messages_sha256, permutation_regex
from pipeline.teacher.settings import TeacherSettings

log = logging.getLogger(__name__)

FIRST_OPENING = "["  # a FIRST prompt ends with the reply's opening bracket: the next token is an identifier


class WindowPrompts:
    """Builds the request of any window of a run (one template, one renderer, one set of settings)."""

    def __init__(self, renderer: PromptRenderer, settings: TeacherSettings, template: PromptTemplate):
        self.renderer, self.settings, self.template = renderer, settings, template
        self.scheme = template.identifiers
        self.first = settings.ranking == "first"
        if self.first:  # fails here, before any model call, unless every identifier is one token
            renderer.first_token_ids(identifiers(settings.window, self.scheme))
        self.opening = FIRST_OPENING if self.first else ""
        self.count_tokens = functools.partial(renderer.count_tokens, opening=self.opening)

    def reply_tokens(self, n: int) -> int:
        """max_tokens of a window of n passages."""
        s = self.settings
        if self.first:
            return 1
        if s.max_new_tokens:
            return s.max_new_tokens
        if s.constrained:
            # under a regex the model may spell the reply in more, shorter tokens than the
            # tokenizer would, and may repeat its longest identifier n times; every token
            # holds at least one character, so the longest match's length always fits
            longest = max(len(name) for name in identifiers(n, self.scheme))
            return n * (longest + 2) + (n - 1) * 3 + 1
        return self.renderer.permutation_tokens(n, self.scheme)

    def request(
        self,
        key: str,
        qid: str,
        window: int,
        query: str,
        passages: list[tuple[str, str | None]],
        words: int | None = None,
        partial: bool = False,
        quiet: bool = False,
    ) -> tuple[Request | None, dict[str, Any]]:
        """The window's request with at most `words` words per passage (default `--max-words`),
        and its `info`; None and an `info` saying why ("overflow") when no prompt fits."""
        s = self.settings
        n = len(passages)
        max_tokens = self.reply_tokens(n)
        words = s.max_words if words is None else words
        try:
            if self.renderer.tokenizer is None:
                messages = build_messages(self.template, query, passages, words)
            else:
                budget = s.max_model_len - max_tokens
                messages, words, _ = fit_messages(self.template, query, passages, self.count_tokens, budget, words)
        except PromptOverflow as e:
            if not quiet:
                log.warning("query %s window %d: %s; its order is kept", qid, window, e)
            return None, {"prompt_sha256": None, "words_per_passage": None, "prompt_tokens": 0, "overflow": str(e)}
        key_json = messages_json(messages)
        text, ids = self.renderer.render(messages, key_json, self.opening)
        info: dict[str, Any] = {
            "prompt_sha256": messages_sha256(messages, key_json),
            "words_per_passage": words,
            "prompt_tokens": len(ids),
        }
        if self.renderer.tokenizer is not None and text.rstrip().endswith("<think>"):
            info["think_opened"] = True
        names = tuple(identifiers(n, self.scheme)) if self.first else ()
        request = Request(
            key,
            text,
            ids,
            info["prompt_sha256"],
            max_tokens,
            qid,
            window,
            regex=permutation_regex(n, self.scheme) if s.constrained else None,
            partial=partial,
            identifiers=names,
            identifier_ids=tuple(self.renderer.first_token_ids(list(names))) if self.first else (),
            messages=tuple(messages),
        )
        return request, info
