"""What a teacher run costs: before it (`--dry-run`), while it runs, and where it must stop.

Prices are per million tokens, prompt and completion apart (`--price-in`, `--price-out`), as
providers quote them. A run's cost counts the windows a model answered for it, in this
invocation or an earlier one that the reply log resumes; windows answered from another run's log
(`--reuse`, a set-aside log) cost nothing. Completion tokens include reasoning tokens, as
providers bill them. `--max-cost` stops submitting windows once the cost reaches the budget;
windows already sent are awaited and logged (they are paid for), the run file is not written,
and the same command with a higher budget resumes from the log.

`estimate` is the dry run: every window of the run built from the first-stage order (later
windows hold other passages of the same lists, so it is close, not exact), its prompt tokens
counted with the tokenizer when there is one, else estimated at 4 characters per token plus the
chat format's few tokens per message; its completion tokens are the reply budget (`max_tokens`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.contract.corpus import CorpusStore
from pipeline.teacher.window_prompt import WindowPrompts
from pipeline.teacher.windows import sliding_windows

CHARS_PER_TOKEN = 4  # English text in the tokenizers of hosted models (OpenAI's rule of thumb)
TOKENS_PER_MESSAGE = 4  # role and separators of the chat format, per message
TOKENS_PER_REPLY = 3  # the reply's opening


@dataclass(frozen=True)
class Prices:
    """Per million tokens."""

    prompt: float
    completion: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


class BudgetReached(Exception):
    """`--max-cost` reached: no window was submitted after it; the reply log holds every answer."""

    def __init__(self, spent: float, budget: float, windows: int, total: int):
        self.spent, self.budget, self.windows, self.total = spent, budget, windows, total
        super().__init__(
            f"stopped at --max-cost {budget:g}: {windows} of {total} windows done, cost {spent:.4f}; "
            "the reply log keeps them: rerun with a higher --max-cost to continue"
        )


def estimate(
    lists: Iterable[tuple[str, list[str]]],
    queries: dict[str, str],
    corpus: CorpusStore,
    prompts: WindowPrompts,
    prices: Prices | None = None,
) -> dict[str, Any]:
    """Windows, prompt and completion tokens (and cost) of a run, without any model."""
    s = prompts.settings
    counted = prompts.renderer.tokenizer is not None
    total = {"queries": 0, "windows": 0, "prompt_tokens": 0, "completion_tokens": 0, "windows_overflowing": 0}
    for qid, doc_ids in lists:
        total["queries"] += 1
        top = doc_ids[: s.depth]
        passages = {p.doc_id: (p.text, p.title) for p in corpus.passages(top)}
        for w in sliding_windows(len(top), s.window, s.stride):
            total["windows"] += 1
            window = [passages[d] for d in top[w.start : w.end]]
            request, info = prompts.request(f"{qid}\t{w.index}", qid, w.index, queries[qid], window, quiet=True)
            if request is None:
                total["windows_overflowing"] += 1
                continue
            total["prompt_tokens"] += info["prompt_tokens"] if counted else _estimated_tokens(request.messages)
            total["completion_tokens"] += request.max_tokens
    total["prompt_tokens_counted_by"] = prompts.renderer.name if counted else f"{CHARS_PER_TOKEN} characters per token"
    if prices is not None:
        total["cost"] = round(prices.cost(total["prompt_tokens"], total["completion_tokens"]), 4)
    return total


def _estimated_tokens(messages: tuple[dict[str, str], ...]) -> int:
    chars = sum(len(m["content"]) for m in messages)
    return -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY


def describe(total: dict[str, Any], prices: Prices | None) -> str:
    """The dry run's report, a few lines."""
    lines = [
        f"dry run (no model called): {total['queries']} queries, {total['windows']} windows",
        f"prompt tokens: {total['prompt_tokens']:,} ({total['prompt_tokens_counted_by']}; passages in first-stage order)",
        f"completion tokens: at most {total['completion_tokens']:,} (the reply budget of every window)",
    ]
    if total["windows_overflowing"]:
        lines.append(f"windows whose prompt cannot fit the context: {total['windows_overflowing']}")
    if prices is not None:
        lines.append(
            f"cost at {prices.prompt:g} / {prices.completion:g} per million prompt / completion tokens: "
            f"at most {total['cost']:.4f}"
        )
    return "\n".join(lines)
