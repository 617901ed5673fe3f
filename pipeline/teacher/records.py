"""One window's reply-log record: the reply read as a permutation, every repair counted.

The record's fields are described in `pipeline.teacher.reply_log`. The permutation is always
re-derived from what the model returned (the reply text, or a FIRST window's first-token
log-probabilities), so replaying a log through this function gives the logged rankings again
without a model.
"""

from __future__ import annotations

from typing import Any

from pipeline.teacher.parse import parse_permutation, rank_by_logprobs
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
) -> dict[str, Any]:
    """One reply-log record (`pipeline.teacher.reply_log`): the reply parsed, its repairs counted.

    `reply` None means no model was asked (the prompt could not fit): the order is kept.
    `reused_from` names the log a reply was taken from instead of calling the model.
    `first_logprobs` (FIRST windows) are the identifiers' log-probabilities as the first
    generated token: they, not the reply text, give the order. `identifiers` is the prompt's
    identifier scheme (`pipeline.teacher.identifiers`); records of letter identifiers say so.
    """
    n = len(doc_ids)
    if reply is None:
        order, repairs, counts = list(range(n)), ["prompt_overflow"], (0, 0, 0)
    else:
        if first_logprobs is not None:
            parsed = rank_by_logprobs(first_logprobs, n, identifiers)
        else:
            parsed = parse_permutation(reply, n, identifiers)
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
    if identifiers != "numbers":
        record["identifiers"] = identifiers
    if first_logprobs is not None:
        record["first_logprobs"] = first_logprobs
    if reused_from is not None:
        record["reused_from"] = reused_from
    return record
