"""Replay: the replies of an earlier reply log, without any model (`--backend replay:LOG`).

LOG is a reply log or a folder of them (`*.jsonl`, e.g. one per recorded query set).

A window's reply is the one logged for the same prompt (SHA-256 of its chat messages):
a window the log never answered is an error naming it, never a guess. Logs of rank_llm's
recorded replies come from `distillm ingest replies`, which matches every recorded prompt to
our windows, so they replay by prompt hash too.

`by_window=True` (tests that script replies per window, no command-line flag) also accepts
the reply logged for the same (qid, window index) when no prompt matches, and counts it.
The index keeps byte offsets, not replies (pipeline.teacher.reuse).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.contract.reply_log import read_settings, reply_log_records
from pipeline.infra.errors import InputError
from pipeline.teacher.backends import Request
from pipeline.teacher.reuse import ReplyIndex, ReusingBackend, logged_reply


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
