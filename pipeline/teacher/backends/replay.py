"""Replay: the replies of an earlier reply log, without any model.

A window's reply is found by the SHA-256 of its prompt; when the prompt text differs (a
changed prompt file, passages shrunk for another tokenizer) it falls back to the reply
logged for the same (qid, window index). A window in neither raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.teacher.backends import Reply, Request
from pipeline.teacher.reply_log import read_reply_log


class ReplayBackend:
    name = "replay"

    def __init__(self, log_path: str | Path):
        self.log_path = Path(log_path)
        if not self.log_path.exists():
            raise InputError(self.log_path, None, "reply log to replay not found")
        self.by_hash: dict[str, dict] = {}
        self.by_window: dict[tuple[str, int], dict] = {}
        for _, record in read_reply_log(self.log_path):
            if record.get("reply") is None:
                continue  # no model was called for this window (e.g. prompt overflow)
            self.by_hash.setdefault(record["prompt_sha256"], record)
            self.by_window.setdefault((record["qid"], record["window"]), record)
        self.pending: list[Reply] = []
        self.matched = {"prompt_sha256": 0, "qid_window": 0}

    def submit(self, request: Request) -> None:
        record = self.by_hash.get(request.prompt_sha256)
        if record is not None:
            self.matched["prompt_sha256"] += 1
        else:
            record = self.by_window.get((request.qid, request.window))
            if record is None:
                raise InputError(
                    self.log_path, None, f"no logged reply for query {request.qid!r} window {request.window}"
                )
            self.matched["qid_window"] += 1
        self.pending.append(Reply(request.key, record["reply"], int(record.get("completion_tokens", 0))))

    def poll(self) -> list[Reply]:
        done, self.pending = self.pending, []
        return done

    def close(self) -> None:
        pass

    def provenance(self) -> dict[str, Any]:
        return {"backend": "replay", "log": str(self.log_path), "matched": dict(self.matched)}
