"""Plain sharding of a teacher run across machines, and the deterministic merge.

    distillm rerank ... --shard 0/4 --out shards/teacher.0.run     # on 4 machines, 0/4 .. 3/4
    distillm merge-shards --run first_stage.run --out teacher.run shards/teacher.*.run

Queries are dealt round-robin in first-stage run order (query p goes to shard p mod N), so
shards are balanced and each is an ordinary teacher run with its own reply log and stats
(and resumes on its own). The merge checks that the shards were made with the same settings,
cover every query of the first-stage run exactly once, and writes one run, one reply log and
one stats file, identical to a single-process run's (the log grouped by query, in run order).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.io.trec import ranked_lists, read_trec_run, run_from_lists, write_trec_run
from pipeline.teacher.reply_log import read_reply_log

log = logging.getLogger(__name__)

# provenance fields that legitimately differ between the shards of one run
_PER_SHARD = {"command", "started", "reply_log", "shard", "block", "backend"}
_SUMMED = (
    "windows",
    "windows_repaired",
    "ids_missing",
    "ids_repeated",
    "ids_out_of_range",
    "windows_with_shrunk_passages",
    "prompt_tokens",
    "completion_tokens",
    "queries",
    "candidates",
)
_SUMMED_IF_PRESENT = ("windows_submitted_early", "early_windows_redone")  # absent from older stats


def parse_shard(spec: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects I/N, e.g. 0/4, got {spec!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {spec}: need 0 <= I < N")
    return index, count


def select_shard(lists: dict[str, list[str]], index: int, count: int) -> dict[str, list[str]]:
    """The queries of shard `index` of `count`: every count-th query in run order."""
    return {qid: docs for p, (qid, docs) in enumerate(lists.items()) if p % count == index}


def merge_shards(first_stage: Path, shard_runs: list[Path], out: Path) -> dict[str, Any]:
    """Merge shard runs (with their `.log.jsonl` and `.stats.json`) covering every query of
    the first-stage run into out, out.log.jsonl and out.stats.json."""
    return merge_runs(list(ranked_lists(read_trec_run(first_stage))), first_stage, shard_runs, out)


def merge_runs(order: list[str], first_stage: Path, shard_runs: list[Path], out: Path) -> dict[str, Any]:
    """Merge teacher runs of disjoint query sets that together hold exactly the queries of
    `order` (queries in that order in the output)."""
    lists: dict[str, list[str]] = {}
    tags, stats_list, records = set(), [], {}
    for run_path in shard_runs:
        run = read_trec_run(run_path)
        tags.update(run["tag"])
        for qid, docs in ranked_lists(run).items():
            if qid in lists:
                raise InputError(run_path, None, f"query {qid!r} is in more than one shard")
            lists[qid] = docs
        stats_path = run_path.with_name(run_path.name + ".stats.json")
        if not stats_path.exists():
            raise InputError(stats_path, None, "shard stats not found (is this a teacher run?)")
        stats_list.append((stats_path, json.loads(stats_path.read_text())))
        for number, record in read_reply_log(run_path.with_name(run_path.name + ".log.jsonl")):
            records.setdefault(record["qid"], {})[record["window"]] = record
            if record["qid"] not in lists:
                raise InputError(run_path, number, f"logged query {record['qid']!r} is not in the shard's run")
    if missing := [q for q in order if q not in lists]:
        raise InputError(first_stage, None, f"{len(missing)} queries are in no shard, e.g. {missing[:3]}")
    if extra := set(lists) - set(order):
        raise InputError(first_stage, None, f"shards hold queries not in this run, e.g. {sorted(extra)[:3]}")
    settings = [{k: v for k, v in s["provenance"].items() if k not in _PER_SHARD} for _, s in stats_list]
    for (path, _), other in zip(stats_list[1:], settings[1:], strict=True):
        if other != settings[0]:
            diff = {
                k: (settings[0].get(k), other.get(k))
                for k in settings[0].keys() | other.keys()
                if settings[0].get(k) != other.get(k)
            }
            raise InputError(path, None, f"shard made with other settings than {stats_list[0][0]}: {diff}")
    if len(tags) != 1:
        raise ValueError(f"shards carry different run tags: {sorted(tags)}")
    write_trec_run(run_from_lists({q: lists[q] for q in order}, tags.pop()), out)
    out_log = out.with_name(out.name + ".log.jsonl")
    tmp = out_log.with_name(out_log.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for qid in order:
            for window in sorted(records.get(qid, {})):
                f.write(json.dumps(records[qid][window], ensure_ascii=False) + "\n")
    tmp.replace(out_log)
    merged: dict[str, Any] = {key: sum(s[key] for _, s in stats_list) for key in _SUMMED}
    merged |= {key: sum(s.get(key, 0) for _, s in stats_list) for key in _SUMMED_IF_PRESENT}
    merged["repairs"] = {k: sum(s["repairs"][k] for _, s in stats_list) for k in stats_list[0][1]["repairs"]}
    merged["repair_rate"] = merged["windows_repaired"] / merged["windows"] if merged["windows"] else 0.0
    merged["seconds"] = max(s["seconds"] for _, s in stats_list)  # wall time of parallel shards
    merged["provenance"] = {
        **stats_list[0][1]["provenance"],
        "reply_log": str(out_log),
        "run": str(first_stage),
        "shards": [
            {
                "run": str(p.with_name(p.name.removesuffix(".stats.json"))),
                "backend": s["provenance"]["backend"],
                "command": s["provenance"].get("command"),
            }
            for p, s in stats_list
        ],
    }
    merged["provenance"].pop("shard", None)
    merged["provenance"].pop("block", None)
    out.with_name(out.name + ".stats.json").write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("merge-shards", help="merge teacher runs made with --shard I/N")
    p.add_argument("shards", nargs="+", type=Path, help="shard runs (with .log.jsonl and .stats.json beside)")
    p.add_argument("--run", type=Path, required=True, help="the first-stage run the shards were made from")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> None:
    merged = merge_shards(args.run, args.shards, args.out)
    log.info(
        "merged %d shards: %d queries, %d windows -> %s",
        len(args.shards),
        merged["queries"],
        merged["windows"],
        args.out,
    )
