"""A window the server refused as too long for its model's context: fewer words per passage.

With a tokenizer the teacher fits every prompt to `--max-model-len` before sending it
(`pipeline.teacher.prompts.fit_messages`). A chat server counts the tokens itself, so a window
starts at the template's `--max-words` per passage and, when the server answers that the prompt
exceeds the model's context (HTTP 400: OpenAI's `context_length_exceeded`, vLLM's "maximum
context length"), is built again with fewer words and sent again. Each refusal is kept in the
window's log record (`context_retries`: the words, the prompt's hash, the server's message), so
`replay:LOG` and `--reuse` answer the refused prompt with the same refusal and shrink the same way:
the new word count is a function of the old one and the server's message only.
"""

from __future__ import annotations

import re

# "maximum context length is 4096 tokens" (OpenAI, vLLM); "maximum model length of 4096" (vLLM)
_LIMIT = re.compile(r"maximum (?:context|model) length (?:is|of) (\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"\d+")
MARGIN = 0.9  # aim below the limit: the instructions around the passages do not shrink
FALLBACK = 0.75  # the share of words kept when the message gives no token counts


def shrunk_words(words: int, message: str) -> int | None:
    """The words per passage for the next try after the server refused `words` with `message`;
    None when a passage is down to one word (the window cannot be prompted: its order is kept).

    When the message names the context limit and a larger count (the tokens the prompt asked
    for), the words are scaled by limit / count with a 10% margin, else cut by a quarter; every
    try drops at least one word and at most half of them.
    """
    if words <= 1:
        return None
    share = FALLBACK
    limit = _LIMIT.search(message)
    if limit is not None:
        over = [int(n) for n in _NUMBER.findall(message) if int(n) > int(limit.group(1))]
        if over:
            share = int(limit.group(1)) / max(over) * MARGIN
    return max(1, min(words - 1, int(words * max(0.5, share))))
