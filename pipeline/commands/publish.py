"""`distillm publish DIR`: the dataset as a versioned archive and manifest in a Zenodo deposition.

    distillm publish DIR --version V [--publish] [--new-version-of RECORD | --draft ID]

The sandbox (https://sandbox.zenodo.org) is the default; https://zenodo.org needs --production.
The deposition is `pipeline.dataset.zenodo.publish`'s; the server flags (`server_flags`) are
`pipeline.dataset.zenodo.ZenodoServer`, shared with `distillm fetch-dataset`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from pipeline.dataset.zenodo import CONFIG, ZenodoServer
from pipeline.infra.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("publish", help="upload a dataset to Zenodo (sandbox unless --production)")
    p.add_argument("dir", type=Path, help="dataset directory (distillm export)")
    p.add_argument("--version", required=True, help="dataset version, e.g. 1.0.0")
    p.add_argument("--publish", action="store_true", help="publish (otherwise the deposition stays a draft)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--new-version-of", metavar="RECORD_ID", help="make a new version of this published record")
    which.add_argument("--draft", metavar="DEPOSITION_ID", help="continue this unpublished deposition")
    p.add_argument("--creator", action="append", default=[], help='"Family, Given; Affiliation" (repeatable)')
    p.add_argument("--dist", type=Path, help="where the archive and manifest go (default DIR/../dist)")
    server_flags(p)
    p.set_defaults(func=run)


def server_flags(parser: argparse.ArgumentParser) -> None:
    """Which Zenodo server, with whose token, how patiently (`ZenodoServer`)."""
    server = parser.add_mutually_exclusive_group()
    server.add_argument("--sandbox", action="store_true", help="https://sandbox.zenodo.org (the default)")
    server.add_argument("--production", action="store_true", help="https://zenodo.org")
    parser.add_argument("--base-url", help="another server (overrides --sandbox/--production)")
    parser.add_argument("--config", type=Path, help=f"TOML with token and creators (default {CONFIG})")
    parser.add_argument(
        "--retries", type=int, default=ZenodoServer.retries, help="retries on 429/5xx/connection errors"
    )
    parser.add_argument(
        "--backoff", type=float, default=ZenodoServer.backoff, help="first retry wait in seconds (doubles)"
    )


def server_of(args: argparse.Namespace) -> ZenodoServer:
    return ZenodoServer(args.base_url, args.production, args.config, args.retries, args.backoff)


def run(args: argparse.Namespace) -> int:
    from pipeline.dataset.zenodo import ZenodoError, _client, creators, publish

    if not re.fullmatch(r"[\w.+-]+", args.version):
        raise ValueError(f"--version {args.version!r}: use letters, digits, '.', '+', '-', '_' only")
    if not (args.dir / "metadata.json").exists() or not (args.dir / "README.md").exists():
        raise InputError(args.dir, None, "not a dataset directory (no metadata.json / README.md)")
    client, config = _client(server_of(args), need_token=True)
    named = creators(args.creator, config)
    if not named:
        raise ValueError("Zenodo needs creators: --creator 'Family, Given; Affiliation' or `creators` in the config")
    try:
        receipt = publish(
            client, args.dir, args.version, named, args.dist, args.new_version_of, args.draft, args.publish
        )
    except ZenodoError as e:
        print(f"distillm publish: error: {client.redact(str(e))}", file=sys.stderr)
        return 1
    state = (
        f"published: record {receipt['record']}, DOI {receipt['doi']}"
        if receipt["published"]
        else f"draft, not published: review it at {receipt['draft_html']}, then publish there or with --draft ID --publish"
    )
    print(f"deposition {receipt['deposition']} on {client.base_url}: {state}")
    return 0
