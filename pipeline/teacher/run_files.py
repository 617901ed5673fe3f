"""One teacher run from a backend name to its files: the run, the reply log and the stats.

Used as is by a single process (`pipeline.teacher.command`) and by every Ray actor for each
block of queries (`pipeline.teacher.ray_engine`), so both write the same files.

    backend = open_teacher_backend(spec, options, reuse_logs, settings_record(...))
    teacher = Teacher(backend, renderer, settings, template, corpus)
    stats = run_to_files(teacher, lists, queries, out, log_path, stats_path, tag, provenance)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.contract.rerank_inputs import RunLists
from pipeline.contract.run import RunWriter
from pipeline.infra.errors import naming_the_file
from pipeline.infra.versions import TEACHER_PACKAGES, versions
from pipeline.teacher.backends import open_backend, streams_partial_replies
from pipeline.teacher.backends.replay import ReplayBackend
from pipeline.teacher.rerank import Teacher
from pipeline.teacher.reuse import ReplyIndex, ReusingBackend, generation_settings
from pipeline.teacher.settings import settings_record
from pipeline.teacher.stats import run_stats


def open_teacher_backend(
    spec: str, options: dict[str, Any], reuse: list[Path], record: dict[str, Any]
) -> ReusingBackend:
    """The backend of `--backend spec`, answering from the `reuse` logs first (those written by
    the same model under the same decoding: `record`'s generation settings). A model backend
    is opened on the first prompt no log answers; `replay:LOG` never opens one."""
    if spec.startswith("replay:"):
        backend: ReusingBackend = ReplayBackend(spec.removeprefix("replay:"))
    else:
        backend = ReusingBackend(
            ReplyIndex(), lambda: open_backend(spec, **options), spec, streams_partial_replies(spec)
        )
    for path in reuse:
        backend.index.add(path, generation_settings(record))
    return backend


def run_to_files(
    teacher: Teacher,
    lists: dict[str, list[str]] | RunLists,
    queries: dict[str, str],
    out: Path,
    log_path: Path,
    stats_path: Path,
    tag: str,
    provenance: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Run the teacher and write the run (query by query, as queries finish, in run order), and
    the stats with provenance; returns the stats. `lists` may be a run on disk (RunLists)."""
    compute_started = time.perf_counter()
    with RunWriter(out, tag) as writer:
        items = lists.items() if isinstance(lists, dict) else lists
        teacher.run_queries(items, queries, log_path, writer.write, progress=progress)
    # the model is opened on the first new prompt, inside the run: its loading is not throughput
    load = teacher.backend.open_seconds
    seconds = time.perf_counter() - compute_started - load
    candidates = lists.candidates if isinstance(lists, RunLists) else sum(len(docs) for docs in lists.values())
    stats = run_stats(
        teacher.tally,
        queries=len(lists),
        candidates=candidates,
        seconds=seconds,
        load_seconds=load,
        prices=teacher.prices,
        provenance={
            **settings_record(teacher.settings, teacher.template, teacher.renderer.name),
            **provenance,
            "reply_log": str(log_path),
            "backend": teacher.backend.provenance(),
            "versions": versions(TEACHER_PACKAGES),
        },
    )
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    with naming_the_file(stats_path):
        stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    return stats
