"""A teacher run's statistics (`OUT.stats.json`): windows, repairs, tokens, cost, timing, provenance;
and where a run's cost must stop it.

Every count comes from the reply-log records of the output's windows, replayed from the log
and new alike, so a resumed run's stats equal an uninterrupted run's (timing aside).
`pipeline.teacher.scale_out` sums these fields when it merges shards.

Tokens: `prompt_tokens` and `completion_tokens` of every window (a chat server's `usage`, or the
local tokenizer's count); `reasoning_tokens`, the part of the completion tokens a reasoning model
spent thinking (the server's count, else the tokenizer's, else the completion tokens shared by
characters).

Cost: prices are per million tokens, prompt and completion apart (`--price-in`, `--price-out`),
as providers quote them. A run's cost counts the windows a model answered for it, in this
invocation or an earlier one that the reply log resumes; windows answered from another run's log
(`--reuse`, a set-aside log) cost nothing. Completion tokens include reasoning tokens, as
providers bill them. `--max-cost` stops submitting windows once the cost reaches the budget
(`BudgetReached`); windows already sent are awaited and logged (they are paid for), the run file
is not written, and the same command with a higher budget resumes from the log. Before a run,
`--dry-run` estimates it (`pipeline.teacher.job.estimate`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pipeline.contract.reply_log import PROMPT_OVERFLOW, REASONING_CUT_OFF, REPAIRS
from pipeline.teacher.settings import Prices


class BudgetReached(Exception):
    """`--max-cost` reached: no window was submitted after it; the reply log holds every answer."""

    def __init__(self, spent: float, budget: float, windows: int, total: int):
        self.spent, self.budget, self.windows, self.total = spent, budget, windows, total
        super().__init__(
            f"stopped at --max-cost {budget:g}: {windows} of {total} windows done, cost {spent:.4f}; "
            "the reply log keeps them: rerun with a higher --max-cost to continue"
        )


@dataclass
class Tally:
    """Counts over all windows of the output (replayed from the log and new alike)."""

    windows: int = 0
    resumed: int = 0
    reused: int = 0  # answered from an earlier log's reply to the same prompt (no model call)
    repaired: int = 0
    repairs: Counter = field(default_factory=Counter)
    ids_missing: int = 0
    ids_repeated: int = 0
    ids_out_of_range: int = 0
    prompt_overflow: int = 0
    shrunk: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    context_retries: int = 0  # prompts a server refused as too long, sent again with fewer words
    paid_prompt_tokens: int = 0  # ... of the windows a model answered for this run (none reused)
    paid_completion_tokens: int = 0
    early: int = 0  # windows submitted before the window they follow had finished
    early_redone: int = 0  # ... of which the finished reply disagreed: submitted again

    def add(self, record: dict[str, Any], max_words: int, resumed: bool = False) -> None:
        self.windows += 1
        self.resumed += resumed
        self.reused += not resumed and "reused_from" in record
        if record["repairs"]:
            self.repaired += 1
        self.repairs.update(record["repairs"])
        self.ids_missing += record["n_missing"]
        self.ids_repeated += record["n_repeated"]
        self.ids_out_of_range += record["n_out_of_range"]
        self.prompt_overflow += PROMPT_OVERFLOW in record["repairs"]
        self.shrunk += record["words_per_passage"] is not None and record["words_per_passage"] < max_words
        self.prompt_tokens += record["prompt_tokens"]
        self.completion_tokens += record["completion_tokens"]
        self.reasoning_tokens += record.get("reasoning_tokens") or 0
        self.context_retries += len(record.get("context_retries", ()))
        if "reused_from" not in record:
            self.paid_prompt_tokens += record["prompt_tokens"]
            self.paid_completion_tokens += record["completion_tokens"]

    def cost(self, prices: Prices) -> float:
        return prices.cost(self.paid_prompt_tokens, self.paid_completion_tokens)

    def summary(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "windows_resumed_from_log": self.resumed,
            "windows_reused": self.reused,
            "windows_repaired": self.repaired,
            "repair_rate": self.repaired / self.windows if self.windows else 0.0,
            "repairs": {name: self.repairs.get(name, 0) for name in (*REPAIRS, REASONING_CUT_OFF, PROMPT_OVERFLOW)},
            "ids_missing": self.ids_missing,
            "ids_repeated": self.ids_repeated,
            "ids_out_of_range": self.ids_out_of_range,
            "windows_with_shrunk_passages": self.shrunk,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "context_length_retries": self.context_retries,
            "windows_submitted_early": self.early,
            "early_windows_redone": self.early_redone,
        }


def run_stats(
    tally: Tally,
    queries: int,
    candidates: int,
    seconds: float,
    load_seconds: float,
    provenance: dict[str, Any],
    prices: Prices | None = None,
) -> dict[str, Any]:
    """The stats JSON of a run: its size, the tally, the cost (with prices), the time (`seconds`
    without the model's loading, `model_load_seconds`), the throughput of the windows the model
    answered (`windows_per_second`: none resumed from the log or reused), and provenance."""
    summary = tally.summary()
    if prices is not None:
        summary["cost"] = cost_record(tally, prices)
    new_windows = summary["windows"] - summary["windows_resumed_from_log"] - summary["windows_reused"]
    return {
        "queries": queries,
        "candidates": candidates,
        **summary,
        "model_load_seconds": round(load_seconds, 3),
        "seconds": round(seconds, 3),
        "windows_per_second": round(new_windows / seconds, 3) if seconds > 0 and new_windows else None,
        "provenance": provenance,
    }


def cost_record(tally: Tally, prices: Prices) -> dict[str, Any]:
    """The stats' `cost`: the prices, the tokens they apply to, the total."""
    return {
        "price_in_per_million": prices.prompt,
        "price_out_per_million": prices.completion,
        "prompt_tokens": tally.paid_prompt_tokens,
        "completion_tokens": tally.paid_completion_tokens,
        "total": round(tally.cost(prices), 6),
    }
