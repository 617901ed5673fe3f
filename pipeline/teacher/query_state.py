"""Where a query stands in its sliding window, and a window on its way through the backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.contract.corpus import Passage
from pipeline.teacher.backends import Reply
from pipeline.teacher.windows import Window


@dataclass
class QueryState:
    qid: str
    query: str
    ranking: list[str]  # the top `depth`, re-ranked in place window by window
    tail: list[str]  # candidates below depth, kept in first-stage order
    windows: list[Window]
    done: int = 0  # windows applied so far
    passages: dict[str, Passage] | None = None
    ahead: Sent | None = None  # the next window, submitted before the current one finished (early)
    ahead_reply: tuple[Reply, float] | None = None  # ... and its reply, if that came first
    no_early: int = -1  # a window not to submit early after (successor cannot be prompted, reply unsettled)
    position: int = 0  # in the run's order of queries: the order the output is written in

    @property
    def finished(self) -> bool:
        return self.done == len(self.windows)


@dataclass
class Sent:
    """A window given to the backend (or that could not be prompted: `info` says why)."""

    key: str  # "qid\twindow", the request's key
    state: QueryState
    window: Window
    doc_ids: list[str]  # in prompt order
    info: dict[str, Any]  # prompt_sha256, words_per_passage, prompt_tokens (window_record's `info`)
    started: float  # perf_counter when submitted
