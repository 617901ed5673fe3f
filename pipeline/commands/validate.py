"""`distillm validate DIR`: is an exported dataset what its metadata and card say it is?

Exit 0 with a summary, or 2 with the offending rows (`pipeline.dataset.validation.validate_dataset`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("validate", help="check an exported dataset (permutations, counts, card)")
    p.add_argument("dir", type=Path, help="dataset directory (distillm export)")
    p.add_argument("--max-problems", type=int, default=100, help="offending rows to print (0: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.dataset.validation import validate_dataset

    summary, problems = validate_dataset(args.dir)
    if not problems:
        print(
            f"{args.dir}: valid: {summary['queries']} queries, {summary['rows']} rows, {summary['shards']} shard(s), "
            f"depth {summary['depth']}, text: {'yes' if summary['with_text'] else 'no'}"
        )
        return 0
    shown = problems if args.max_problems <= 0 else problems[: args.max_problems]
    print("qid\tdoc_id\tproblem")
    for p in shown:
        print(f"{p.qid}\t{p.doc_id}\t{p.message}")
    if len(shown) < len(problems):
        print(f"... and {len(problems) - len(shown)} more")
    print(f"distillm validate: {args.dir}: INVALID: {len(problems)} problem(s)", file=sys.stderr)
    return 2
