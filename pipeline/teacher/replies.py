"""A window's reply: read as a permutation (every repair named and counted), or refused as too
long, and made into the window's reply-log record.

Reading a permutation (`parse_reply`, `parse_permutation`). The repair rules are castorini/rank_llm's
(`receive_permutation`, `clean_ranking_response`, `_remove_duplicate` in
src/rank_llm/rerank/listwise/): drop everything up to the last `</think>`, read every maximal run
of digits as a 1-based identifier, keep the first occurrence of each, drop identifiers outside
1..n, and append the identifiers never named in their current order. rank_llm does this
silently; here every repair is named and counted (the names: `pipeline.contract.reply_log.REPAIRS`).

Two deliberate differences in reading digits: rank_llm maps a fixed table of look-alikes
(superscripts, circled, fullwidth, ...) and then calls `int()` on `str.isdigit()` runs, which
raises on digits outside its table (e.g. '⒈' or Ethiopic '፩'), after which rank_llm keeps the
whole window in its old order. We NFKC-normalise and map any remaining Unicode digit by its
value, so no input raises. Runs longer than any identifier are out of range without `int()`
(Python refuses to convert digit strings over 4300 characters).

Letter identifiers (`[A] > [C] > ...`, prompts with `identifiers = "letters"`) are read as
rank_llm's alphabetical template extracts them: every `[X]` with one capital letter X.

Reasoning replies: a model that thinks first writes `<think>...</think>` before its answer, or
its server returns the thoughts apart (`reasoning_content`). Only the text after the reasoning
is read (identifiers the model names while thinking never count), and an answer wrapped in
`<answer>...</answer>` (ReasonRank's format) is read inside the tags. A reply that ends inside
its reasoning (no `</think>` after a `<think>`, or thoughts and no answer: the token budget ran
out) has no answer: the window keeps its order and the repair `reasoning_cut_off` is counted,
with every identifier missing.

FIRST windows (`--ranking first`) have no permutation to read: `rank_by_logprobs` orders the
identifiers by their log-probability as the first generated token, and appends the ones the
backend returned none for in their current order, counted as `missing`.

A reply read while it is still being generated (`settled_head`) fixes the head of the
permutation early: the driver submits the next window on it (`pipeline.teacher.driver`).

A prompt the server refused as too long for its model's context (`shrunk_words`). With a
tokenizer the teacher fits every prompt to `--max-model-len` before sending it
(`pipeline.teacher.prompts.fit_messages`). A chat server counts the tokens itself, so a window
starts at the template's `--max-words` per passage and, when the server answers that the prompt
exceeds the model's context (HTTP 400: OpenAI's `context_length_exceeded`, vLLM's "maximum
context length"), is built again with fewer words and sent again. Each refusal is kept in the
window's log record (`context_retries`: the words, the prompt's hash, the server's message), so
`replay:LOG` and `--reuse` answer the refused prompt with the same refusal and shrink the same
way: the new word count is a function of the old one and the server's message only.

The window's record (`window_record`, `reply_record`): the fields of
`pipeline.contract.reply_log`. The permutation is always re-derived from what the model returned
(the reply text, or a FIRST window's first-token log-probabilities), so replaying a log through
these functions gives the logged rankings again without a model.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.contract.reply_log import PROMPT_OVERFLOW, REASONING_CUT_OFF, REPAIRS
from pipeline.teacher.backends import Reply
from pipeline.teacher.prompts import identifiers
from pipeline.teacher.windows import Window

# The expected reply: `[i] > [j] > ...` with ASCII digits; spaces or tabs around `>` are free.
_FORMAT = re.compile(r"\[[0-9]+\](?:[ \t]*>[ \t]*\[[0-9]+\])*")
_LETTER_FORMAT = re.compile(r"\[[A-Z]\](?:[ \t]*>[ \t]*\[[A-Z]\])*")
_LETTER_ID = re.compile(r"\[([A-Z])\]")


@dataclass(frozen=True)
class ParsedPermutation:
    """A reply read as a permutation of a window of n candidates."""

    order: list[int]  # full 0-based permutation of range(n), best first
    repairs: tuple[str, ...]  # subset of REPAIRS in REPAIRS order (then REASONING_CUT_OFF); empty = a clean reply
    n_missing: int  # identifiers 1..n never named (appended in current order)
    n_repeated: int  # repeated mentions of an in-range identifier (all but the first dropped)
    n_out_of_range: int  # mentions of identifiers outside 1..n, 0 included (dropped)

    @property
    def ok(self) -> bool:
        """True when the reply needed no repair."""
        return not self.repairs


_ASCII_DIGIT_RUNS = re.compile(r"[0-9]+")


def _digit_runs(text: str) -> list[str]:
    """Maximal runs of digits, with Unicode digit look-alikes read as ASCII digits."""
    if text.isascii():  # NFKC leaves ASCII as it is, and its only digits are 0-9
        return _ASCII_DIGIT_RUNS.findall(text)
    chars = []
    for c in unicodedata.normalize("NFKC", text):
        value = unicodedata.digit(c, None) if c.isdigit() else None
        chars.append(" " if value is None else str(value))
    return "".join(chars).split()


def parse_permutation(reply: str, n: int, scheme: str = "numbers") -> ParsedPermutation:
    """Read `reply` as a ranking of identifiers 1..n (or A.. for `scheme` "letters"); never raises for any string."""
    if "</think>" in reply:  # a reasoning model's thoughts may mention identifiers
        reply = reply.rsplit("</think>", 1)[1]
    reply = reply.strip()
    seen: list[int] = []
    named: set[int] = set()
    repeated = out_of_range = 0
    for ident in _letter_ids(reply) if scheme == "letters" else _number_ids(reply, n):
        if not 1 <= ident <= n:
            out_of_range += 1
        elif ident - 1 in named:
            repeated += 1
        else:
            seen.append(ident - 1)
            named.add(ident - 1)
    missing = [i for i in range(n) if i not in named]
    flags = {
        "wrong_format": (_LETTER_FORMAT if scheme == "letters" else _FORMAT).fullmatch(reply) is None,
        "repetition": repeated > 0,
        "missing": bool(missing),
        "out_of_range": out_of_range > 0,
    }
    return ParsedPermutation(
        order=seen + missing,
        repairs=tuple(name for name in REPAIRS if flags[name]),
        n_missing=len(missing),
        n_repeated=repeated,
        n_out_of_range=out_of_range,
    )


_ANSWER_TAGS = re.compile(r"\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def split_reasoning(reply: str, reasoning: str | None = None, opened: bool = False) -> tuple[str | None, str | None]:
    """(reasoning, answer) of a reply. `reasoning` is what the server returned apart from the
    text; `opened`: the prompt itself ended with `<think>` (a chat template that opens the
    thoughts), so the text starts inside them. The answer is None when the reply ended inside
    its reasoning; the reasoning is None when there was none."""
    if "</think>" in reply:
        thoughts, answer = reply.rsplit("</think>", 1)
        return "\n".join(part for part in (reasoning, thoughts) if part), answer
    if opened or reply.lstrip().startswith("<think>"):
        return reply, None
    if reasoning and not reply.strip():
        return reasoning, None
    return reasoning, reply


def parse_reply(
    reply: str, n: int, scheme: str = "numbers", reasoning: str | None = None, opened: bool = False
) -> ParsedPermutation:
    """`parse_permutation` of the answer after any reasoning (see `split_reasoning`), read inside
    `<answer>` tags when it is wrapped in them; a reply cut off inside its reasoning keeps the
    window's order, counted as `reasoning_cut_off` with every identifier missing."""
    _, answer = split_reasoning(reply, reasoning, opened)
    if answer is None:
        return ParsedPermutation(list(range(n)), ("missing", REASONING_CUT_OFF), n, 0, 0)
    wrapped = _ANSWER_TAGS.fullmatch(answer)
    return parse_permutation(wrapped.group(1) if wrapped else answer, n, scheme)


def _number_ids(reply: str, n: int) -> list[int]:
    """The reply's digit runs as 1-based identifiers; 0 for a run longer than any identifier."""
    max_digits = len(str(max(n, 1)))
    ids = []
    for run in _digit_runs(reply):
        digits = run.lstrip("0")
        ids.append(int(digits) if 0 < len(digits) <= max_digits else 0)
    return ids


def _letter_ids(reply: str) -> list[int]:
    """Every `[X]` (one capital letter) of the reply as a 1-based identifier (A = 1)."""
    return [ord(letter) - ord("A") + 1 for letter in _LETTER_ID.findall(reply)]


def rank_by_logprobs(logprobs: dict[str, float], n: int, scheme: str) -> ParsedPermutation:
    """A FIRST window's permutation: identifiers by their first-token log-probability, best
    first (equal ones in window order), then those with none in window order (`missing`).
    Keys that are not identifiers of the window are ignored."""
    names = identifiers(n, scheme)
    scored = sorted((-logprobs[name], i) for i, name in enumerate(names) if name in logprobs)
    named = {i for _, i in scored}
    missing = [i for i in range(n) if i not in named]
    return ParsedPermutation(
        order=[i for _, i in scored] + missing,
        repairs=("missing",) if missing else (),
        n_missing=len(missing),
        n_repeated=0,
        n_out_of_range=0,
    )


def settled_head(partial_reply: str, n: int, m: int) -> list[int] | None:
    """The first `m` entries (0-based) of the permutation the finished reply will give, if
    the reply so far already fixes them; else None.

    Generation only appends text, so identifiers read so far stay read, except a trailing
    run of digits (the next token may extend "1" to "12"), which is not counted yet. The one
    thing appended text can still change is a later `</think>`, which drops everything
    before it: callers compare with the finished reply's permutation (see
    `pipeline.teacher.driver`, which re-submits the next window on a mismatch). Nothing is
    settled while the reply is inside its reasoning (a `<think>` not closed yet).
    """
    if m <= 0:
        return []
    _, partial_reply = split_reasoning(partial_reply)
    if partial_reply is None:
        return None
    runs = _digit_runs(partial_reply)
    if runs and _ends_in_digit(partial_reply):
        runs.pop()  # may still grow
    max_digits = len(str(max(n, 1)))
    head: list[int] = []
    for run in runs:
        digits = run.lstrip("0")
        ident = int(digits) if 0 < len(digits) <= max_digits else 0
        if 1 <= ident <= n and ident - 1 not in head:
            head.append(ident - 1)
            if len(head) == m:
                return head
    return None


def _ends_in_digit(text: str) -> bool:
    last = unicodedata.normalize("NFKC", text[-1])
    return any(c.isdigit() for c in last)


# --- a refused prompt ------------------------------------------------------------------------

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


# --- the window's record ----------------------------------------------------------------------


def window_record(
    qid: str,
    window: Window,
    doc_ids: list[str],
    info: dict[str, Any],
    reply: str | None,
    completion_tokens: int,
    seconds: float,
    reused_from: str | None = None,
    first_logprobs: dict[str, float] | None = None,
    identifiers: str = "numbers",
    reasoning: str | None = None,
    reasoning_tokens: int | None = None,
) -> dict[str, Any]:
    """One reply-log record (`pipeline.contract.reply_log`): the reply parsed, its repairs counted.

    `reply` None means no model was asked (the prompt could not fit): the order is kept.
    `reused_from` names the log a reply was taken from instead of calling the model.
    `first_logprobs` (FIRST windows) are the identifiers' log-probabilities as the first
    generated token: they, not the reply text, give the order. `identifiers` is the prompt's
    identifier scheme (`pipeline.teacher.prompts.identifiers`); records of letter identifiers say so.
    `reasoning` is a reasoning model's thoughts as the server returned them apart from `reply`
    (thoughts in the text stay there): the permutation is read from the answer after them
    (`parse_reply`), and `reasoning_tokens` counts them. From `info`
    (`pipeline.teacher.render`) come `think_opened` (the prompt opened the reasoning)
    and `context_retries` (the prompts a server refused as too long before this one).
    """
    n = len(doc_ids)
    if reply is None:
        order, repairs, counts = list(range(n)), [PROMPT_OVERFLOW], (0, 0, 0)
    else:
        if first_logprobs is not None:
            parsed = rank_by_logprobs(first_logprobs, n, identifiers)
        else:
            parsed = parse_reply(reply, n, identifiers, reasoning, bool(info.get("think_opened")))
        order, repairs = parsed.order, list(parsed.repairs)
        counts = (parsed.n_missing, parsed.n_repeated, parsed.n_out_of_range)
    record = {
        "qid": qid,
        "window": window.index,
        "start_rank": window.start + 1,
        "end_rank": window.end,
        "doc_ids": doc_ids,
        "prompt_sha256": info["prompt_sha256"],
        "reply": reply,
        "permutation": [i + 1 for i in order],
        "repairs": repairs,
        "n_missing": counts[0],
        "n_repeated": counts[1],
        "n_out_of_range": counts[2],
        "words_per_passage": info["words_per_passage"],
        "prompt_tokens": info["prompt_tokens"],
        "completion_tokens": completion_tokens,
        "seconds": round(seconds, 4),
    }
    if reasoning is not None:
        record["reasoning"] = reasoning
    if reasoning_tokens is not None:
        record["reasoning_tokens"] = reasoning_tokens
    if info.get("think_opened"):
        record["think_opened"] = True
    if info.get("context_retries"):
        record["context_retries"] = info["context_retries"]
    if identifiers != "numbers":
        record["identifiers"] = identifiers
    if first_logprobs is not None:
        record["first_logprobs"] = first_logprobs
    if reused_from is not None:
        record["reused_from"] = reused_from
    return record


def reply_record(
    qid: str,
    window: Window,
    doc_ids: list[str],
    info: dict[str, Any],
    reply: Reply | None,
    seconds: float,
    identifiers: str = "numbers",
    count: Callable[[str], int] | None = None,
) -> dict[str, Any]:
    """`window_record` of a backend's reply (None: no prompt fitted), with a chat prompt's
    tokens as the server counted them, and the reasoning's tokens counted (with `count`, the
    tokenizer's) when the backend did not count them."""
    if reply is None:
        return window_record(qid, window, doc_ids, info, None, 0, seconds, identifiers=identifiers)
    if reply.prompt_tokens and not info["prompt_tokens"]:
        info = {**info, "prompt_tokens": reply.prompt_tokens}
    thinking = reply.reasoning_tokens
    if thinking is None and reply.logprobs is None:
        opened = bool(info.get("think_opened"))
        thinking = count_reasoning_tokens(reply.text, reply.reasoning, opened, reply.completion_tokens, count)
    return window_record(
        qid,
        window,
        doc_ids,
        info,
        reply.text,
        reply.completion_tokens,
        seconds,
        reply.reused_from,
        reply.logprobs,
        identifiers,
        reply.reasoning,
        thinking,
    )


def count_reasoning_tokens(
    reply: str, reasoning: str | None, opened: bool, completion_tokens: int, count: Callable[[str], int] | None
) -> int | None:
    """The completion tokens a reply spent reasoning (None: it did not reason), for a backend
    that does not report them: counted with the tokenizer (`count`) when there is one, else
    the completion tokens shared between reasoning and answer by their characters."""
    thoughts, answer = split_reasoning(reply, reasoning, opened)
    if not thoughts:
        return None
    if count is not None:
        return min(completion_tokens, count(thoughts))
    return round(completion_tokens * len(thoughts) / (len(thoughts) + len(answer or "")))
