"""One window's reply-log record: the reply read as a permutation, every repair counted.

The record's fields are described in `pipeline.contract.reply_log`. The permutation is always
re-derived from what the model returned (the reply text, or a FIRST window's first-token
log-probabilities), so replaying a log through this function gives the logged rankings again
without a model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.teacher.backends import Reply
from pipeline.teacher.parse import parse_reply, rank_by_logprobs, split_reasoning
from pipeline.teacher.windows import Window


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
    identifier scheme (`pipeline.teacher.identifiers`); records of letter identifiers say so.
    `reasoning` is a reasoning model's thoughts as the server returned them apart from `reply`
    (thoughts in the text stay there): the permutation is read from the answer after them
    (`pipeline.teacher.parse.parse_reply`), and `reasoning_tokens` counts them. From `info`
    (`pipeline.teacher.window_prompt`) come `think_opened` (the prompt opened the reasoning)
    and `context_retries` (the prompts a server refused as too long before this one).
    """
    n = len(doc_ids)
    if reply is None:
        order, repairs, counts = list(range(n)), ["prompt_overflow"], (0, 0, 0)
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
