"""A window's chat messages as the model sees them: prompt text, token ids, and the hash that names them.

`PromptRenderer` applies the model tokenizer's chat template and tokenizes the result as
vLLM's `generate` would. A FIRST prompt (`opening="["`) ends with the reply's opening
bracket, so the model's next token is an identifier; `first_token_ids` checks that every
identifier is one token there. `messages_sha256` is a window's `prompt_sha256` in the reply
log: the same messages give the same hash whatever the model, which is what lets earlier
replies answer the same prompt (`pipeline.teacher.reuse`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.teacher.identifiers import identifiers

Messages = list[dict[str, str]]


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
