"""`distillm card DIR`: rewrite DIR/README.md (the dataset card) from DIR/metadata.json
(`pipeline.dataset.dataset_card.write_card`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.infra.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("card", help="rewrite a dataset's README.md from its metadata.json")
    p.add_argument("dir", type=Path, help="dataset directory (distillm export)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.dataset.dataset_card import write_card

    path = args.dir / "metadata.json"
    if not path.exists():
        raise InputError(path, None, "not found: not a dataset directory (distillm export)")
    print(write_card(args.dir, json.loads(path.read_text())))
    return 0
