"""`distillm fetch-dataset RECORD`: a published dataset version (or any record's files), verified.

    distillm fetch-dataset RECORD --out DIR [--file PATTERN ...]

Downloads a record's files and checks md5 (record) and sha256 (manifest), unpacks the archive and
validates the dataset (`pipeline.dataset.zenodo.fetch`, `pipeline.dataset.validation`); it replaces
an existing --out only if that is an earlier fetch of the same record (or with --overwrite).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.commands.publish import server_flags, server_of


def register(subparsers: argparse._SubParsersAction) -> None:
    q = subparsers.add_parser(
        "fetch-dataset", help="download a published dataset version (or any record's files), verify, validate"
    )
    q.add_argument("record", help="Zenodo record id (e.g. 15131907: the published Rank-DistiLLM runs, --production)")
    q.add_argument(
        "--out", type=Path, required=True, help="dataset directory (or, for other records, folder) to create"
    )
    q.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="PATTERN",
        help="of a record that is not a distillm export: only the files matching this glob (repeatable)",
    )
    q.add_argument(
        "--overwrite", action="store_true", help="replace --out even if it is not an earlier fetch of this record"
    )
    server_flags(q)
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.dataset.validation import validate_dataset
    from pipeline.dataset.zenodo import ZenodoError, _client, fetch

    client, _ = _client(server_of(args), need_token=False)
    try:
        export = fetch(client, args.record, args.out, args.overwrite, args.file)
    except ZenodoError as e:
        print(f"distillm fetch-dataset: error: {client.redact(str(e))}", file=sys.stderr)
        return 1
    out = args.out
    if not export:
        files = sorted(p.name for p in out.iterdir())
        print(
            f"{out}: {len(files)} file(s) of record {args.record}, md5 checked (not a distillm export): {', '.join(files)}"
        )
        return 0
    summary, problems = validate_dataset(out)
    for problem in problems:
        print(f"{problem.qid}\t{problem.doc_id}\t{problem.message}")
    print(f"{out}: {'INVALID' if problems else 'valid'}: {summary['queries']} queries, {summary['rows']} rows")
    return 2 if problems else 0
