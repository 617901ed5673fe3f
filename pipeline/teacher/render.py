"""A window's request: its chat messages as the model sees them (prompt text, token ids), the
hash that names them, and its reply budget.

`PromptRenderer` applies the model tokenizer's chat template and tokenizes the result as
vLLM's `generate` would. A FIRST prompt (`opening="["`) ends with the reply's opening
bracket, so the model's next token is an identifier; `first_token_ids` checks that every
identifier is one token there. `messages_sha256` is a window's `prompt_sha256` in the reply
log: the same messages give the same hash whatever the model, which is what lets earlier
replies answer the same prompt (`pipeline.teacher.reuse`).

`WindowPrompts` builds any window's request. With a tokenizer the messages are fitted to the
model's context (`--max-model-len` minus the reply budget: passages shortened as rank_llm does)
and rendered with its chat template; without one (a chat server, or replay) they are built at
the window's word budget and the server counts the tokens. The request's `info` becomes part of
the window's log record (`pipeline.teacher.replies.window_record`): prompt_sha256,
words_per_passage, prompt_tokens (0 until a chat server counts them), and `think_opened` when
the rendered prompt ends inside an opened `<think>` (the model's reply then starts with its
reasoning).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.teacher.backends import Request
from pipeline.teacher.prompts import Messages, PromptOverflow, PromptTemplate, build_messages, fit_messages, identifiers
from pipeline.teacher.settings import TeacherSettings

log = logging.getLogger(__name__)

FIRST_OPENING = "["  # a FIRST prompt ends with the reply's opening bracket: the next token is an identifier


def messages_json(messages: Messages) -> str:
    """The messages as the JSON text that is hashed (prompt_sha256) and, with no tokenizer, sent."""
    return json.dumps(messages, ensure_ascii=False)


def messages_sha256(messages: Messages, key: str | None = None) -> str:
    key = messages_json(messages) if key is None else key
    return hashlib.sha256(key.encode()).hexdigest()


def permutation_regex(n: int, scheme: str = "numbers") -> str:
    """Replies of exactly n identifiers in RankZephyr's format (a regex cannot demand distinct ones)."""
    ident = r"\[(?:" + "|".join(reversed(identifiers(n, scheme))) + r")\]"
    return ident + f"(?: > {ident}){{{n - 1}}}" if n > 1 else ident


class PromptRenderer:
    """Chat messages -> prompt text and token ids with the model's tokenizer.

    Without a tokenizer (replay), prompts are the messages as JSON and are never shrunk.
    """

    def __init__(self, tokenizer: str | None):
        self.name = tokenizer
        self.tokenizer = None
        if tokenizer is not None:
            self.tokenizer = load_tokenizer(tokenizer)
        self._cache: tuple[str, str, str, list[int]] | None = None
        self._permutation_tokens: dict[tuple[int, str], int] = {}
        self._first_ids: dict[tuple[str, ...], list[int]] = {}

    def render(self, messages: Messages, key: str | None = None, opening: str = "") -> tuple[str, list[int]]:
        """(prompt text, token ids); `key` is `messages_json(messages)` when the caller has it already.

        `opening` is text the reply starts with, appended after the chat template's generation
        prompt (FIRST: "[")."""
        key = messages_json(messages) if key is None else key
        if self._cache and self._cache[:2] == (key, opening):
            return self._cache[2], self._cache[3]
        if self.tokenizer is None:
            text, ids = key, []
        else:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + opening
            ids = self._tokenize(text)
        self._cache = (key, opening, text, ids)
        return text, ids

    def _tokenize(self, text: str) -> list[int]:
        # like vLLM's generate on a text prompt: BOS is added unless the template wrote it
        bos = self.tokenizer.bos_token
        return self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]

    def count_tokens(self, messages: Messages, opening: str = "") -> int:
        return len(self.render(messages, opening=opening)[1])

    def count_text_tokens(self, text: str) -> int:
        """Tokens of a piece of generated text (a reasoning model's thoughts)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def permutation_tokens(self, n: int, scheme: str = "numbers") -> int:
        """Tokens of the longest well-formed reply for n passages, plus EOS and one spare."""
        if self.tokenizer is None:
            return 4 * n + 2
        if (n, scheme) not in self._permutation_tokens:
            reply = " > ".join(f"[{i}]" for i in reversed(identifiers(n, scheme)))
            tokens = len(self.tokenizer(reply, add_special_tokens=False)["input_ids"]) + 2
            self._permutation_tokens[n, scheme] = tokens
        return self._permutation_tokens[n, scheme]

    def first_token_ids(self, names: list[str], opening: str = "[") -> list[int]:
        """The token id of each identifier as the first token after a prompt ending in `opening`.

        Raises ValueError if an identifier is not exactly one token there (FIRST reads one
        token: "10" is two in Mistral's tokenizer; use a prompt with letter identifiers).
        [] without a tokenizer (replay needs no ids).
        """
        if self.tokenizer is None:
            return []
        if tuple(names) not in self._first_ids:
            # any prompt ending in the generation prompt tokenizes "[" + identifier alike
            probe = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
            )
            before = self._tokenize(probe + opening)
            ids = []
            for name in names:
                after = self._tokenize(probe + opening + name)
                if after[: len(before)] != before or len(after) != len(before) + 1:
                    pieces = self.tokenizer.convert_ids_to_tokens(after[len(before) - 1 :])
                    raise ValueError(
                        f"identifier {name!r} is not one token after {opening!r} in {self.name}'s tokenizer "
                        f"({pieces}): FIRST ranking needs single-token identifiers, e.g. --prompt rank_zephyr_alpha"
                    )
                ids.append(after[-1])
            self._first_ids[tuple(names)] = ids
        return self._first_ids[tuple(names)]


def load_tokenizer(name: str):
    """The tokenizer (with its chat template) of a local folder or a model hub id.

    Fails in seconds with one line naming `name` (ValueError) when it is neither: a missing or
    unreadable folder, a name that is no hub id, not in the hub's cache while offline, unknown
    to the hub, or a hub that cannot be reached (transformers alone would retry for a minute
    and end in a traceback).
    """
    from transformers import AutoTokenizer

    where = f"tokenizer {name!r} (--tokenizer, default --model)"
    path = Path(name).expanduser()
    if path.is_dir():
        try:
            return AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, TypeError) as e:
            raise ValueError(f"{where}: the folder holds no loadable tokenizer ({_first_line(e)})") from None
    import huggingface_hub
    from huggingface_hub.utils import HFValidationError

    try:
        huggingface_hub.utils.validate_repo_id(name)
    except HFValidationError:
        raise ValueError(f"{where}: no such folder, and not a model hub id") from None
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)  # the hub's cache
    except (OSError, ValueError):
        pass
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ValueError(f"{where}: no such folder, and not in the model hub's cache (HF_HUB_OFFLINE is set)")
    try:  # one quick question first: from_pretrained retries an unreachable hub for a minute
        huggingface_hub.HfApi().model_info(name, timeout=10)
    except huggingface_hub.errors.RepositoryNotFoundError:
        raise ValueError(f"{where}: no such folder, and no such model on the hub (or a gated one)") from None
    except Exception as e:  # its HTTP client's errors (httpx2.ConnectError, ...) share no base with OSError
        raise ValueError(f"{where}: no such folder, and the model hub cannot be reached ({_first_line(e)})") from None
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{where}: cannot be loaded from the hub ({_first_line(e)})") from None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


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
