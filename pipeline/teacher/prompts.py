"""Listwise prompt templates (TOML files in prompts/) rendered into chat messages.

A template holds an optional system message and three str.format strings: `prefix` and
`suffix` (fields {num}, {query}) around one `passage` line per candidate (fields {rank},
{passage}). The user message is prefix + passage lines + suffix, which reproduces
castorini/rank_llm's `create_prompt` (src/rank_llm/rerank/listwise/rank_listwise_os_llm.py)
character for character when the template carries its strings, as prompts/*.toml do.

Passage text goes through `ftfy.fix_text` first, as in rank_llm (MS MARCO has mojibake;
RankZephyr was trained on repaired text). tests/teacher/test_reference_replay.py shows every
user message equal to the ones rank_llm logged on DL19 and DL20.

How a prompt names the passages of a window (`identifiers`): `[1]`, `[2]`, ... or, with
`identifiers = "letters"` in the template, `[A]`, `[B]`, ... Numbers are what RankGPT,
RankVicuna and RankZephyr were trained on. Letters are what FIRST models
(castorini/first_mistral, rank_llm's `--use_alpha`) use: FIRST ranks a window by the
log-probability of the first generated identifier, so every identifier must be one token, and
numbers from 10 up are two tokens in Llama/Mistral tokenizers. Letters allow windows of at most
26 passages; with them `[X]` in query or passage text is written `(X)`, as rank_llm's
`_replace_number` does with `use_alpha`.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftfy import fix_text

from pipeline.infra.errors import InputError
from pipeline.teacher.settings import TeacherSettings

Messages = list[dict[str, str]]

SCHEMES = ("numbers", "letters")


def identifiers(n: int, scheme: str = "numbers") -> list[str]:
    """The identifiers of a window of n passages, in prompt order: "1".."n" or "A".."Z"."""
    if scheme == "numbers":
        return [str(i) for i in range(1, n + 1)]
    if scheme == "letters":
        if n > len(string.ascii_uppercase):
            raise ValueError(f"letter identifiers name at most 26 passages, not a window of {n}")
        return list(string.ascii_uppercase[:n])
    raise ValueError(f"unknown identifier scheme {scheme!r}: choose one of {SCHEMES}")


def identifier(rank: int, scheme: str = "numbers") -> str:
    """The identifier of the passage at 1-based `rank` of a window."""
    return str(rank) if scheme == "numbers" else identifiers(rank, scheme)[-1]


# The keys of a template file and the str.format fields each may use.
_FIELDS = {"system": set(), "prefix": {"num", "query"}, "passage": {"rank", "passage"}, "suffix": {"num", "query"}}
_REQUIRED = ("prefix", "passage", "suffix")


@dataclass(frozen=True)
class PromptTemplate:
    """A listwise prompt template loaded from a TOML file."""

    name: str  # the file's stem, e.g. "rank_zephyr"
    path: Path
    sha256: str  # of the file's bytes, for provenance
    system: str | None
    prefix: str
    passage: str
    suffix: str
    identifiers: str = "numbers"  # how {rank} names a passage: "numbers" (1, 2, ...) or "letters" (A, B, ...)


class PromptOverflow(Exception):
    """Even one word per passage does not fit the prompt-token budget."""

    def __init__(self, tokens: int, budget: int):
        self.tokens = tokens
        self.budget = budget
        super().__init__(f"prompt needs {tokens} tokens at 1 word per passage; the budget is {budget}")


def prompts_dir() -> Path:
    """The repository's prompts/ folder."""
    return Path(__file__).resolve().parents[2] / "prompts"


def load_prompt(name_or_path: str) -> PromptTemplate:
    """Load `prompts/<name>.toml` for a bare name, or the .toml file at a path.

    Raises FileNotFoundError (listing the available names) for an unknown name or missing
    file, and InputError for a file that is not TOML, lacks prefix/passage/suffix, has other
    keys, or uses str.format fields its key does not allow.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml" and path.parent == Path("."):
        path = prompts_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in prompts_dir().glob("*.toml"))) or "none"
            raise FileNotFoundError(f"unknown prompt {name_or_path!r}; available: {names} (in {prompts_dir()})")
    elif not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputError(path, None, f"not a valid TOML file: {e}") from None
    scheme = data.pop("identifiers", "numbers")
    if scheme not in SCHEMES:
        raise InputError(path, None, f"'identifiers' must be one of {list(SCHEMES)}, got {scheme!r}")
    if unknown := sorted(set(data) - set(_FIELDS)):
        raise InputError(path, None, f"unknown keys {unknown}; a prompt has {sorted(_FIELDS)} and 'identifiers'")
    if missing := [key for key in _REQUIRED if key not in data]:
        raise InputError(path, None, f"missing keys {missing}; required: {list(_REQUIRED)}")
    for key, value in data.items():
        if not isinstance(value, str):
            raise InputError(path, None, f"{key!r} must be a string, got {type(value).__name__}")
        try:
            fields = {field for _, field, _, _ in string.Formatter().parse(value) if field is not None}
        except ValueError as e:  # unbalanced braces
            raise InputError(path, None, f"{key!r} is not a valid str.format template: {e}") from None
        if bad := sorted(fields - _FIELDS[key]):
            raise InputError(path, None, f"{key!r} uses fields {bad}; allowed: {sorted(_FIELDS[key])}")
    if not {"rank", "passage"} <= {f for _, f, _, _ in string.Formatter().parse(data["passage"])}:
        raise InputError(path, None, "'passage' must use both {rank} and {passage}")
    return PromptTemplate(
        name=path.stem,
        path=path.resolve(),
        sha256=hashlib.sha256(raw).hexdigest(),
        system=data.get("system") or None,
        prefix=data["prefix"],
        passage=data["passage"],
        suffix=data["suffix"],
        identifiers=scheme,
    )


def replace_number(text: str, scheme: str = "numbers") -> str:
    """Write `[n]` as `(n)` (letters: `[X]` as `(X)`), as rank_llm's `_replace_number` does,
    so that passage or query text cannot be mistaken for an identifier."""
    return re.sub(r"\[([A-Za-z]+)\]" if scheme == "letters" else r"\[(\d+)\]", r"(\1)", text)


_NEEDS_NO_FIX = re.compile(r"[\n\x20-\x25\x27-\x7e]*")  # printable ASCII and "\n", no "&"


def _fix_text(text: str) -> str:
    """ftfy.fix_text, skipped where it provably changes nothing: its fixes need non-ASCII
    characters, control characters or an HTML entity ("&"). Most MS MARCO passages qualify."""
    return text if _NEEDS_NO_FIX.fullmatch(text) else fix_text(text)


@functools.lru_cache(maxsize=65_536)  # a passage is in ~2 windows at stride 10
def passage_content(text: str, title: str | None, max_words: int, scheme: str = "numbers") -> str:
    """A passage as the prompt shows it (rank_llm's `convert_doc_to_prompt_content`):
    "Title: <title> Content: <text>" when there is a title, the first `max_words`
    whitespace-separated words joined by single spaces, `[n]` written as `(n)`, mojibake
    repaired by ftfy."""
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    content = f"Title: {title} Content: {text}" if title else text
    # fix_text last, as rank_llm: it can turn a control character into a line break
    return _fix_text(replace_number(" ".join(content.split()[:max_words]), scheme))


def build_messages(
    template: PromptTemplate, query: str, passages: list[tuple[str, str | None]], max_words: int
) -> Messages:
    """The chat messages for one window: the system message (if any) and one user message.

    `passages` are (text, title) pairs in window order; they get identifiers [1], [2], ...
    (or [A], [B], ... with the template's letter identifiers)
    """
    scheme = template.identifiers
    query = replace_number(query, scheme)
    lines = (
        template.passage.format(rank=identifier(rank, scheme), passage=passage_content(text, title, max_words, scheme))
        for rank, (text, title) in enumerate(passages, start=1)
    )
    user = (
        template.prefix.format(num=len(passages), query=query)
        + "".join(lines)
        + template.suffix.format(num=len(passages), query=query)
    )
    messages = [{"role": "system", "content": template.system}] if template.system else []
    return [*messages, {"role": "user", "content": user}]


def fit_messages(
    template: PromptTemplate,
    query: str,
    passages: list[tuple[str, str | None]],
    count_tokens: Callable[[Messages], int],
    max_prompt_tokens: int,
    max_words: int = TeacherSettings.max_words,
) -> tuple[Messages, int, int]:
    """Build the messages with at most `max_words` words per passage, shortening all passages
    until `count_tokens(messages) <= max_prompt_tokens`.

    Returns (messages, words per passage used, prompt tokens). The shrinking step is
    rank_llm's: max(1, (tokens - budget) // (number of passages * 4)) words per round.
    Differences from rank_llm: (1) it starts from 300 * 20 / window size words, so a short top
    window gets longer passages; we start every window at `max_words`, so a passage is cut the
    same way in every window (identical for full windows of 20). (2) When nothing fits it
    keeps going below one word (negative slices) without end; we stop at 1 word and raise
    PromptOverflow.
    """
    words = max_words
    while True:
        messages = build_messages(template, query, passages, words)
        tokens = count_tokens(messages)
        if tokens <= max_prompt_tokens:
            return messages, words, tokens
        if words == 1:
            raise PromptOverflow(tokens, max_prompt_tokens)
        step = max(1, (tokens - max_prompt_tokens) // (max(1, len(passages)) * 4))
        words = max(1, words - step)
