"""`distillm`: one subcommand per pipeline stage, one module per command (`pipeline.commands`).

Each command module declares its flags and calls its stage's library; heavy libraries (torch,
vLLM, Pyserini) are imported only when their command runs, so `distillm --help` is fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pipeline import __version__
from pipeline.commands import (
    card,
    data,
    evaluate,
    export,
    fetch_dataset,
    index,
    ingest,
    merge_shards,
    offline_model,
    publish,
    report,
    rerank,
    retrieve,
    study,
    train,
    validate,
)
from pipeline.infra.errors import InputError, OutOfSpace, ServiceError
from pipeline.infra.watchdog import StallError

# in the order `distillm --help` lists them: the stages in the order they run, then the tools
COMMANDS = (
    ingest,
    index,
    retrieve,
    rerank,
    merge_shards,
    evaluate,
    report,
    study,
    train,
    export,
    validate,
    card,
    publish,
    fetch_dataset,
    offline_model,
    data,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillm", description="Rank-DistiLLM pipeline: first stages, LLM teacher, dataset, student."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except (InputError, ValueError) as e:  # InputError names the file and line
        print(f"distillm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the output's reader stopped early (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except StallError as e:  # a library call that stopped making progress (pipeline/infra/watchdog.py)
        print(f"distillm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except (ServiceError, OutOfSpace) as e:  # a server that refuses, a full disk: one line says what to do
        print(f"distillm {args.command}: error: {e}", file=sys.stderr)
        return 1
