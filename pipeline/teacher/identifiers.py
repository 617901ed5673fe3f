"""How a prompt names the passages of a window: `[1]`, `[2]`, ... or `[A]`, `[B]`, ...

A prompt file chooses its scheme (`identifiers = "letters"`; numbers by default). Numbers
are what RankGPT, RankVicuna and RankZephyr were trained on. Letters are what FIRST models
(castorini/first_mistral, rank_llm's `--use_alpha`) use: FIRST ranks a window by the
log-probability of the first generated identifier, so every identifier must be one token,
and numbers from 10 up are two tokens in Llama/Mistral tokenizers. Letters allow windows of
at most 26 passages.
"""

from __future__ import annotations

import string

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
