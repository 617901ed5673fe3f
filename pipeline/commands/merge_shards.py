"""`distillm merge-shards`: teacher runs made with `--shard I/N` -> one run, reply log and stats.

    distillm merge-shards --run first_stage.run --out teacher.run shards/teacher.*.run

The merge is `pipeline.teacher.scale_out.merge_shards`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("merge-shards", help="merge teacher runs made with --shard I/N")
    p.add_argument("shards", nargs="+", type=Path, help="shard runs (with .log.jsonl and .stats.json beside)")
    p.add_argument("--run", type=Path, required=True, help="the first-stage run the shards were made from")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.teacher.scale_out import merge_shards

    merged = merge_shards(args.run, args.shards, args.out)
    log.info(
        "merged %d shards: %d queries, %d windows -> %s",
        len(args.shards),
        merged["queries"],
        merged["windows"],
        args.out,
    )
    return 0
