"""The teacher's driver: the reference loop of `pipeline.teacher.windows.rerank`, for a run's queries.

The reference loop re-ranks one query, window by window, from the bottom up:

    for window in sliding_windows(min(depth, len(ranking)), window, stride):
        ranking = apply_permutation(ranking, window, rank_window(ranking[window.start : window.end]))

`Teacher` runs that loop for every query of a run over one backend. Its body is `_advance` (cut
the query's next window from its ranking, build its prompt, submit it) and `_apply` (read the
reply as a permutation, log the window, apply the permutation); the loop is `run_queries`, which
polls the backend and advances each query whose reply came back. Windows of different queries
are independent, so each query's next window goes out as soon as its previous one returns and
the backend stays busy (at most `max_active` queries in flight); rankings are handed on in run
order. Memory holds the queries in flight, never the run (the lists are read from disk: `RunLists`).

Layered on the loop, each in a section below:

- the log: every window is logged before it is applied (`pipeline.contract.reply_log`); a rerun
  after a crash (even kill -9) replays the logged windows (`pipeline.teacher.resume`) and goes on:
  the output is that of an uninterrupted run. Another run's log is set aside, its replies reused;
- early submission (backends that stream, numeric identifiers): window w+1 re-uses the first
  places of w's order, fixed once w's reply names them (half-way through its generation), so
  w+1 is submitted then; when w finishes, w+1's doc ids are checked and, on any difference (only
  a later `</think>` can cause one), w+1 is submitted again. Replies are logged and applied in
  window order, so the log, the run and resuming are the same either way;
- refused prompts: a window a chat server refuses as longer than its context is built again
  with fewer words per passage (`pipeline.teacher.replies.shrunk_words`);
- the budget: with `max_cost` no window is submitted once the cost reaches it (`BudgetReached`).

FIRST (`ranking="first"`): the prompt ends with the reply's opening "[", the backend generates
one token, and the window is ordered by its identifiers' log-probabilities as that token
(`pipeline.teacher.replies.rank_by_logprobs`); the identifiers must be single tokens (checked
when the teacher is built), and there is no permutation to stream, so no early submission.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.contract.corpus import CorpusStore, Passage
from pipeline.contract.reply_log import REASONING_CUT_OFF, ReplyLogWriter
from pipeline.infra.errors import InputError
from pipeline.teacher.backends import Backend, Reply, Request
from pipeline.teacher.prompts import PromptTemplate
from pipeline.teacher.render import PromptRenderer, WindowPrompts
from pipeline.teacher.replies import reply_record, settled_head, shrunk_words
from pipeline.teacher.resume import LogMismatch, Resumed, move_log_aside, resume, settings_record
from pipeline.teacher.reuse import ReplyIndex, ReusingBackend, generation_settings
from pipeline.teacher.settings import Prices, TeacherSettings
from pipeline.teacher.stats import BudgetReached, Tally
from pipeline.teacher.windows import Window, apply_permutation, sliding_windows

log = logging.getLogger(__name__)


@dataclass
class QueryState:
    """Where a query stands in its sliding window."""

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


class Teacher:
    """Runs the sliding window for many queries over one backend, logging every window."""

    def __init__(
        self,
        backend: Backend,
        renderer: PromptRenderer,
        settings: TeacherSettings,
        template: PromptTemplate,
        corpus: CorpusStore,
        max_active: int = 512,
        early: bool = True,
        prices: Prices | None = None,
        max_cost: float | None = None,
    ):
        if not isinstance(backend, ReusingBackend):  # a model backend: reuse earlier replies before asking it
            partial = getattr(backend, "supports_partial", False)
            backend = ReusingBackend(ReplyIndex(), lambda model=backend: model, backend.name, partial)
        self.backend, self.renderer, self.settings, self.template = backend, renderer, settings, template
        self.corpus, self.max_active = corpus, max_active
        self.prompts = WindowPrompts(renderer, settings, template)
        self.scheme, self.first = template.identifiers, self.prompts.first
        self.prices, self.max_cost = prices, max_cost
        if max_cost is not None and prices is None:
            raise ValueError("--max-cost needs the prices: --price-in and --price-out")
        self.early = early and backend.supports_partial and not self.first and self.scheme == "numbers"
        self.tally = Tally()
        self.in_flight: dict[str, Sent] = {}  # while running: submitted windows by request key
        self.queries: dict[str, str] | None = None
        self._windows: dict[int, list[Window]] = {}  # sliding windows by number of candidates
        self.writer, self.bar = None, None  # while running: the reply log and the progress bar
        self.stopped = False  # the budget was reached: no window submitted since

    def _windows_of(self, candidates: int) -> list[Window]:
        """The sliding windows of a query with that many candidates (shared: Window is frozen)."""
        n = min(self.settings.depth, candidates)
        if n not in self._windows:
            self._windows[n] = sliding_windows(n, self.settings.window, self.settings.stride)
        return self._windows[n]

    def run(
        self, lists: dict[str, list[str]], queries: dict[str, str], log_path: Path, progress: bool = True
    ) -> dict[str, list[str]]:
        """Each query's candidates re-ranked (the top `depth`, then the rest in first-stage order)."""
        reranked: dict[str, list[str]] = {}
        self.run_queries(lists.items(), queries, log_path, reranked.__setitem__, progress)
        return reranked

    def run_queries(
        self,
        lists: Iterable[tuple[str, list[str]]],
        queries: dict[str, str],
        log_path: Path,
        emit: Callable[[str, list[str]], None],
        progress: bool = True,
    ) -> None:
        """Re-rank the (qid, candidates) of `lists` (iterated twice: resuming, then running) and hand
        each query's ranking to `emit`, in the order of `lists`, once it and every query before it are done."""
        self.queries, self._windows = queries, {}
        waiting = self._waiting(lists, self._resume(lists, log_path))
        total = sum(len(self._windows_of(len(docs))) for _, docs in lists)
        self.bar = tqdm(total=total, initial=self.tally.windows, desc="teacher", unit=" windows", disable=not progress)
        self._show_cost()
        self.in_flight, self.active, self.emit = {}, 0, emit
        self.finished: dict[int, tuple[str, list[str]]] = {}  # done, waiting for an earlier query
        self.emitted = 0
        with ReplyLogWriter(log_path) as self.writer:
            self._fill(waiting)
            while self.in_flight:
                replies = self.backend.poll()
                if not replies:
                    raise RuntimeError(
                        f"backend {self.backend.name} returned no reply with {len(self.in_flight)} pending"
                    )
                for reply in replies:
                    self._receive(reply)
                self._fill(waiting)
        self.bar.close()
        if self.stopped:
            raise BudgetReached(self.tally.cost(self.prices), self.max_cost, self.tally.windows, total)
        if self.finished or next(waiting, None) is not None:  # pragma: no cover - a bug, not bad input
            raise RuntimeError(f"teacher stopped with {len(self.finished)} queries not written")

    def _fill(self, waiting: Iterator[QueryState]) -> None:
        """Start queries until `max_active` have a window in flight."""
        while self.active < self.max_active and not self._over_budget():
            state = next(waiting, None)
            if state is None:
                return
            self.active += 1
            if state.finished:  # all its windows were in the log
                self._finished(state)
            else:
                self._advance(state)

    def _finished(self, state: QueryState) -> None:
        """Hand over the query's ranking, and those of later queries that were waiting for it."""
        self.active -= 1
        self.finished[state.position] = (state.qid, state.ranking + state.tail)
        while self.emitted in self.finished:
            self.emit(*self.finished.pop(self.emitted))
            self.emitted += 1

    # --- the loop's body: a query's next window out, its reply in --------------------------------

    def _advance(self, state: QueryState) -> None:
        """Submit the query's next window (recording windows that cannot be prompted)."""
        while not state.finished:
            if self._over_budget():
                return  # the query stays where it is: its windows so far are in the log
            window = state.windows[state.done]
            doc_ids = state.ranking[window.start : window.end]
            if state.passages is None:
                state.passages = {p.doc_id: p for p in self.corpus.passages(state.ranking)}
            request, sent = self._request(state, window, doc_ids)
            if request is not None:
                self._submit(request, sent)
                return
            self._apply(sent, None, 0.0)  # overflow: order kept
        state.passages = None  # finished: free the text
        self._finished(state)

    def _request(
        self, state: QueryState, window: Window, doc_ids: list[str], quiet: bool = False, words: int | None = None
    ) -> tuple[Request | None, Sent]:
        """The window's request (None: no prompt fits; `info` says why), and its record in flight."""
        key = f"{state.qid}\t{window.index}"
        passages = [(state.passages[d].text, state.passages[d].title) for d in doc_ids]
        partial = self.early and window.index + 1 < len(state.windows)
        request, info = self.prompts.request(key, state.qid, window.index, state.query, passages, words, partial, quiet)
        return request, Sent(key, state, window, doc_ids, info, 0.0)

    def _submit(self, request: Request, sent: Sent) -> None:
        self.backend.submit(request)
        sent.started = time.perf_counter()
        self.in_flight[request.key] = sent

    def _receive(self, reply: Reply) -> None:
        """A partial reply may let the next window start early; a finished one is applied (in
        window order) and its query's next window submitted."""
        sent = self.in_flight.get(reply.key)
        if sent is None:
            return  # the last output of a cancelled request
        if not reply.finished:
            self._submit_early(sent, reply)
            return
        del self.in_flight[reply.key]
        seconds = time.perf_counter() - sent.started
        state = sent.state
        if reply.context_error is not None:
            self._retry_shorter(sent, reply, seconds)
            return
        if state.ahead is sent:  # an early window, finished before the window it follows
            state.ahead_reply = (reply, seconds)
            return
        self._apply(sent, reply, seconds)
        if not (state.ahead and self._settle_ahead(state)):
            self._advance(state)

    def _apply(self, sent: Sent, reply: Reply | None, seconds: float) -> None:
        """Log the window's reply (None: no prompt fitted) and apply its permutation."""
        state, window = sent.state, sent.window
        if reply is not None and self.first != (reply.logprobs is not None):
            kind = "full-generation reply (no first-token log-probabilities)" if self.first else "FIRST reply"
            raise InputError(
                reply.reused_from or self.backend.name,
                None,
                f"query {state.qid!r} window {window.index}: a {kind} cannot answer a window of this run "
                f"(--ranking {self.settings.ranking})",
            )
        count = self.renderer.count_text_tokens if self.renderer.tokenizer is not None else None
        record = reply_record(state.qid, window, sent.doc_ids, sent.info, reply, seconds, self.scheme, count)
        if REASONING_CUT_OFF in record["repairs"] and not self.tally.repairs[REASONING_CUT_OFF]:  # warn once
            log.warning(
                "query %s window %d: the reply ended inside its reasoning (its order is kept; counted as "
                "reasoning_cut_off): raise --max-new-tokens",
                state.qid,
                window.index,
            )
        self.writer.write(record)  # logged before it is applied: the log is the ground truth
        state.ranking = apply_permutation(state.ranking, window, [i - 1 for i in record["permutation"]])
        state.done += 1
        self.tally.add(record, self.settings.max_words)
        self._show_cost()
        self.bar.update()

    # --- the log: resuming this run's, setting another run's aside -------------------------------

    def _resume(self, lists: Iterable[tuple[str, list[str]]], log_path: Path) -> dict[str, Resumed]:
        """Each query's progress in the log (its windows counted in the tally), or none when the
        log is another run's: then it is set aside and its replies answer identical prompts."""
        try:
            count = lambda record: self.tally.add(record, self.settings.max_words, resumed=True)  # noqa: E731
            return resume(lists, self._windows_of, self.settings.depth, log_path, count)
        except LogMismatch as e:
            # the log is another run's (a changed first stage, corpus, queries): set it aside and
            # take its replies wherever a window's prompt is the same; never mix it into this run's
            moved = move_log_aside(log_path)
            log.warning("%s; that log is moved to %s and its replies reused for identical prompts", e, moved)
            record = settings_record(self.settings, self.template, self.renderer.name)
            self.backend.index.add(moved, generation_settings(record))
            self.tally = Tally()
            return {}

    def _waiting(self, lists: Iterable[tuple[str, list[str]]], resumed: dict[str, Resumed]) -> Iterator[QueryState]:
        """The queries in run order, each with its progress from the log applied."""
        depth = self.settings.depth
        for position, (qid, doc_ids) in enumerate(lists):
            windows = self._windows_of(len(doc_ids))
            state = QueryState(qid, self.queries[qid], doc_ids[:depth], doc_ids[depth:], windows, position=position)
            if (progress := resumed.pop(qid, None)) is not None:
                state.ranking = [state.ranking[i] for i in progress.order]
                state.done = progress.done
            yield state

    # --- early submission: the next window out once this one's head has settled ------------------

    def _submit_early(self, sent: Sent, partial: Reply) -> None:
        """Submit the query's next window if `partial` (text so far) already fixes its doc ids."""
        state, window = sent.state, sent.window
        if state.ahead or window.index != state.done or state.no_early == state.done:
            return  # one early window at a time, and only after a confirmed one
        following = state.windows[state.done + 1]
        overlap = following.end - window.start
        text = "<think>" + partial.text if sent.info.get("think_opened") else partial.text  # the prompt opened it
        head = settled_head(text, window.size, overlap)
        if head is None:
            # a well-formed reply has named `overlap` identifiers by about this many
            # tokens; past half as many again, stop following this one (it may be text)
            if partial.completion_tokens > 1.5 * self.prompts.reply_tokens(window.size) * overlap / window.size:
                state.no_early = state.done
                self.backend.stop_partial(partial.key)
            return
        order = head + [i for i in range(window.size) if i not in head]
        doc_ids = apply_permutation(state.ranking, window, order)[following.start : following.end]
        request, ahead = self._request(state, following, doc_ids, quiet=True)
        if request is not None:  # else it cannot be prompted: recorded in order once `window` is applied
            self._submit(request, ahead)
            state.ahead = ahead
        else:
            state.no_early = state.done
        self.backend.stop_partial(partial.key)  # the rest of its text is not needed early

    def _settle_ahead(self, state: QueryState) -> bool:
        """After a window is applied: keep its early successor (True: still in flight) if its
        doc ids are the right ones, else cancel it."""
        ahead, early_reply = state.ahead, state.ahead_reply
        state.ahead = state.ahead_reply = None
        if state.ranking[ahead.window.start : ahead.window.end] != ahead.doc_ids:
            self.tally.early_redone += 1
            log.warning(
                "query %s window %d: submitted early on a reply that changed; again", state.qid, ahead.window.index
            )
            if early_reply is None:
                self.backend.cancel(ahead.key)
                del self.in_flight[ahead.key]
            return False
        self.tally.early += 1
        if early_reply is None:
            return True
        self._apply(ahead, *early_reply)
        return False

    # --- refused prompts: a window too long for the server's model, with fewer words -------------

    def _retry_shorter(self, sent: Sent, reply: Reply, seconds: float) -> None:
        """The server refused the window's prompt as too long: build it with fewer words per
        passage and send it again; at one word, record it as not promptable (order kept)."""
        state, window, info = sent.state, sent.window, sent.info
        refused = {k: info[k] for k in ("words_per_passage", "prompt_sha256")} | {"error": reply.context_error}
        retries = [*info.get("context_retries", ()), refused]
        if state.ahead is sent:  # an early window: drop it; it is sent again in its turn
            state.ahead, state.no_early = None, state.done
            self.tally.early_redone += 1
            return
        words = shrunk_words(info["words_per_passage"], reply.context_error)
        if words is not None:
            log.info(
                "query %s window %d: too long for the server; %d words per passage", state.qid, window.index, words
            )
            request, again = self._request(state, window, sent.doc_ids, quiet=True, words=words)
            again.info["context_retries"] = retries
            if request is not None:
                self._submit(request, again)
                return
            sent = again
        else:
            overflow = f"the server refuses even 1 word per passage: {reply.context_error}"
            sent.info = {"prompt_sha256": None, "words_per_passage": None, "prompt_tokens": 0, "overflow": overflow}
            sent.info["context_retries"] = retries
        log.warning("query %s window %d: %s; its order is kept", state.qid, window.index, sent.info["overflow"])
        self._apply(sent, None, seconds)
        if not (state.ahead and self._settle_ahead(state)):
            self._advance(state)

    # --- the budget ------------------------------------------------------------------------------

    def _over_budget(self) -> bool:
        self.stopped = self.stopped or (self.max_cost is not None and self.tally.cost(self.prices) >= self.max_cost)
        return self.stopped

    def _show_cost(self) -> None:
        if self.prices is not None:
            self.bar.set_postfix_str(f"cost {self.tally.cost(self.prices):.4f}", refresh=False)
