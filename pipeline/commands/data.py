"""`distillm data fetch`: the public data of the tests and the demo, linked at `data/shared`
(`pipeline.shared_data`, whose description `--help` shows)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline import shared_data
from pipeline.commands import defaults
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    d = defaults(shared_data.fetch)
    data = sub.add_parser("data", help="the public data of the tests and the demo").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    p = data.add_parser(
        "fetch",
        help="link data/shared to ../shared, or download the data into a cache and link that",
        description=shared_data.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repo", type=Path, default=Path("."), help="the checkout to link data/shared in (default: .)")
    p.add_argument("--from", dest="source", type=Path, help="a data root that holds every file (no download)")
    p.add_argument(
        "--cache", type=Path, help="download cache (default: $DISTILLM_DATA_CACHE or ~/.cache/distillm/data)"
    )
    p.add_argument("--mirror", help="base URL replacing scheme and host of every URL (default: $DISTILLM_DATA_MIRROR)")
    p.add_argument("--retries", type=int, default=d.retries, help="further attempts after a failed transfer")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not (args.repo / "pyproject.toml").is_file():
        raise InputError(args.repo.resolve(), None, "not the repository's root (no pyproject.toml): pass --repo")
    result = shared_data.fetch(
        args.repo,
        source=args.source,
        cache=args.cache,
        mirror=args.mirror,
        retries=args.retries,
        progress=not args.no_progress,
    )
    for path in result.unavailable:
        log.warning("%s: no public URL is known; put it under %s yourself if you need it", path, result.root)
    print(f"{result.link} -> {result.root.resolve()} ({len(result.downloaded)} file(s) downloaded)")
    return 0
