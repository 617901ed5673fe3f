"""Replies already paid for: earlier reply logs as a cache keyed by the prompt's hash.

A teacher's expensive unit is one model call on one prompt. A window whose prompt
(`prompt_sha256`, the hash of its chat messages) was answered before, by the same model under
the same generation settings, gets that reply again instead of a new model call: after a
changed first stage, more queries, other window settings or a crash, only new prompts cost
anything. The same mechanism is the replay backend (`--backend replay:LOG`, `ReplayBackend`):
every window must be in the log, and no model is ever opened.

The index holds, per prompt hash, the file and byte offset of its record (about 150 bytes
per window in memory), never the replies themselves; a reply is read back when it is used.
Greedy decoding makes a reply a function of (prompt, model, tokenizer, reply budget,
constraint, ranking mode: a FIRST reply is one token and its identifiers' log-probabilities,
re-ranked from those), so those are what must match (`GENERATION_KEYS`); the backend that produced a
reply is recorded but does not matter (vLLM and transformers give the same greedy replies:
tests/teacher/test_backends.py).

Replay: LOG is a reply log or a folder of them (`*.jsonl`, e.g. one per recorded query set). A
window's reply is the one logged for the same prompt: a window the log never answered is an error
naming it, never a guess. Logs of rank_llm's recorded replies come from `distillm ingest replies`
(`pipeline.teacher.recorded_replies`), which matches every recorded prompt to our windows, so
they replay by prompt hash too. `by_window=True` (tests that script replies per window, no
command-line flag) also accepts the reply logged for the same (qid, window index) when no prompt
matches, and counts it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.contract.reply_log import load_record, read_settings, reply_log_records
from pipeline.infra.errors import InputError
from pipeline.teacher.backends import Backend, Reply, Request

log = logging.getLogger(__name__)

GENERATION_KEYS = ("model", "tokenizer", "max_new_tokens", "constrained", "ranking")


def generation_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """What makes a reply the same reply: the model and how it decodes (see module docstring)."""
    return {k: settings.get(k) for k in GENERATION_KEYS}


def logged_reply(key: str, record: dict[str, Any], path: Path) -> Reply:
    """A logged window's reply (and a FIRST window's log-probabilities, a reasoning model's
    thoughts and the tokens counted), answering request `key`."""
    tokens = int(record.get("completion_tokens") or 0)
    return Reply(
        key,
        record["reply"],
        tokens,
        True,
        str(path),
        record.get("first_logprobs"),
        reasoning=record.get("reasoning"),
        reasoning_tokens=record.get("reasoning_tokens"),
        prompt_tokens=record.get("prompt_tokens") or None,
    )


def logged_refusal(key: str, record: dict[str, Any], prompt_sha256: str, path: Path) -> Reply:
    """The server's refusal of a prompt as too long (a window's `context_retries`), again."""
    error = next(r["error"] for r in record["context_retries"] if r["prompt_sha256"] == prompt_sha256)
    return Reply(key, "", 0, True, str(path), context_error=error)


class ReplyIndex:
    """prompt_sha256 -> (log, byte offset) over one or more reply logs; the first log wins.

    `refused` holds the prompts a server refused as too long for its context (a record's
    `context_retries`): a window built the same way meets the same refusal, and shrinks the
    same way (`pipeline.teacher.replies.shrunk_words`), without asking the server again."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.windows: dict[str, tuple[int, int]] = {}
        self.refused: dict[str, tuple[int, int]] = {}

    def add(self, path: str | Path, require: dict[str, Any] | None = None) -> int:
        """Index a log's answered windows; returns how many new prompts it adds.

        With `require` (generation settings), the log's settings file must show the same,
        else it is skipped with a warning (its replies are another model's or decoding's).
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(path, None, "reply log not found")
        if require is not None:
            settings = read_settings(path)
            if settings is None:
                raise InputError(path, None, "no settings file beside it (LOG.settings.json): whose replies are these?")
            if (theirs := generation_settings(settings)) != require:
                changed = {k: (theirs[k], require[k]) for k in require if theirs[k] != require[k]}
                log.warning("%s: not reused, written under other generation settings %s", path, changed)
                return 0
        source, before = len(self.paths), len(self.windows)
        self.paths.append(path)
        for _, offset, record in reply_log_records(path):
            sha = record.get("prompt_sha256")
            if sha and record.get("reply") is not None:
                self.windows.setdefault(sha, (source, offset))
            for refusal in record.get("context_retries", ()):
                self.refused.setdefault(refusal["prompt_sha256"], (source, offset))
        added = len(self.windows) - before
        log.info("reply index: %d prompts from %s", added, path)
        return added

    def get(self, prompt_sha256: str) -> tuple[dict[str, Any], Path] | None:
        """The logged record that answered this prompt, and its log."""
        where = self.windows.get(prompt_sha256)
        return None if where is None else self.read(*where)

    def read(self, source: int, offset: int) -> tuple[dict[str, Any], Path]:
        """The record at `offset` of the `source`-th log, and that log."""
        path = self.paths[source]
        with open(path, "rb") as f:
            f.seek(offset)
            return load_record(f.readline()), path

    def __len__(self) -> int:
        return len(self.windows)


class ReusingBackend:
    """Answers each window from the index where it can and asks the model for the rest.

    The model backend is opened (`open_model()`) on the first window the index cannot answer:
    a run whose every prompt was answered before never loads a model. With no model
    (`open_model` None: replay) a window missing from the index is an error naming it.
    """

    def __init__(
        self,
        index: ReplyIndex,
        open_model: Callable[[], Backend] | None,
        name: str,
        supports_partial: bool = False,
    ):
        self.index, self.open_model, self.name = index, open_model, name
        self.supports_partial = supports_partial
        self.model: Backend | None = None
        self.ready: list[Reply] = []
        self.reused = 0
        self.computed = 0
        self.open_seconds = 0.0  # loading the model, when a window needed it

    def submit(self, request: Request) -> None:
        found = self.index.get(request.prompt_sha256)
        if found is not None:
            record, path = found
            self.reused += 1
            self.ready.append(logged_reply(request.key, record, path))
            return
        if request.prompt_sha256 in self.index.refused:
            record, path = self.index.read(*self.index.refused[request.prompt_sha256])
            self.ready.append(logged_refusal(request.key, record, request.prompt_sha256, path))
            return
        if self.open_model is None:
            source = ", ".join(map(str, self.index.paths)) or "the reply log"
            raise InputError(
                source,
                None,
                f"no logged reply for query {request.qid!r} window {request.window} with this prompt "
                f"(prompt_sha256 {request.prompt_sha256[:12]}...): the logged teacher never saw this window "
                "(other candidates, first stage, prompt or passage budget?); a new window needs a model backend",
            )
        if self.model is None:
            log.info(
                "%d windows reused so far; opening the %s backend for the first new prompt", self.reused, self.name
            )
            started = time.perf_counter()
            self.model = self.open_model()
            self.open_seconds = time.perf_counter() - started
        self.computed += 1
        self.model.submit(request)

    def poll(self) -> list[Reply]:
        if self.ready:
            done, self.ready = self.ready, []
            return done
        return self.model.poll() if self.model is not None else []

    def cancel(self, key: str) -> None:
        if any(r.key == key for r in self.ready):
            self.ready = [r for r in self.ready if r.key != key]
        elif self.model is not None:
            self.model.cancel(key)

    def stop_partial(self, key: str) -> None:
        if self.model is not None and not any(r.key == key for r in self.ready):
            self.model.stop_partial(key)

    def close(self) -> None:
        if self.model is not None:
            self.model.close()

    def provenance(self) -> dict[str, Any]:
        found = {
            "windows_reused": self.reused,
            "windows_computed": self.computed,
            "reuse_sources": [str(p) for p in self.index.paths],
        }
        if self.model is not None:
            return {**self.model.provenance(), **found}
        return {"backend": self.name, **found}


# --- replay: every window from the logs, no model ----------------------------------------------


def replay_logs(path: Path) -> list[Path]:
    """The reply logs of `replay:PATH`: the file, or the `*.jsonl` files of the folder."""
    if path.is_dir():
        logs = sorted(path.glob("*.jsonl"))
        if not logs:
            raise InputError(path, None, "no reply logs (*.jsonl) in this folder")
        return logs
    if not path.is_file():
        raise InputError(path, None, "reply log to replay not found")
    return [path]


def replay_settings(path: Path) -> dict[str, Any] | None:
    """The settings the replayed replies were written under (of the first log; None if unknown)."""
    return read_settings(replay_logs(path)[0])


class ReplayBackend(ReusingBackend):
    name = "replay"

    def __init__(self, log_path: str | Path, by_window: bool = False):
        self.log_path = Path(log_path)
        index = ReplyIndex()
        for path in replay_logs(self.log_path):
            index.add(path)
        super().__init__(index, None, "replay")
        self.by_window: dict[tuple[str, int], int] = {}
        if by_window:
            for _, offset, record in reply_log_records(index.paths[0]):
                if record.get("reply") is not None:
                    self.by_window.setdefault((record["qid"], record["window"]), offset)
        self.matched = {"prompt_sha256": 0, "qid_window": 0}

    def submit(self, request: Request) -> None:
        offset = self.by_window.get((request.qid, request.window))
        if offset is None or request.prompt_sha256 in self.index.windows:
            super().submit(request)  # by prompt hash, or an error naming the window
            self.matched["prompt_sha256"] += 1
            return
        record, path = self.index.read(0, offset)
        self.matched["qid_window"] += 1
        self.ready.append(logged_reply(request.key, record, path))

    def provenance(self) -> dict[str, Any]:
        return {"backend": "replay", "log": str(self.log_path), "matched": dict(self.matched)}
