"""`distillm`: one subcommand per pipeline stage.

Each stage module owns its arguments (`register(subparsers)`); heavy libraries (torch,
vLLM, Pyserini) are imported only when their command runs, so `distillm --help` is fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pipeline import __version__, data_fetch, evaluate, ingest, offline_models, report, rerank
from pipeline.infra.errors import InputError, OutOfSpace, ServiceError
from pipeline.infra.watchdog import StallError
from pipeline.student import train as student_train
from pipeline.study import command as study_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillm", description="Rank-DistiLLM pipeline: first stages, LLM teacher, dataset, student."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ingest.register(sub)
    _register_first_stages(sub)
    _register_teacher(sub)
    evaluate.register(sub)
    report.register(sub)
    study_command.register(sub)
    student_train.register(sub)
    from pipeline.dataset import card, export, validate, zenodo

    export.register(sub)
    validate.register(sub)
    card.register(sub)
    zenodo.register(sub)
    offline_models.register(sub)
    data_fetch.register(sub)
    return parser


def _register_first_stages(sub: argparse._SubParsersAction) -> None:
    """`distillm index ENGINE ...` and `distillm retrieve ENGINE ...`, one module per engine."""
    index = sub.add_parser("index", help="build a first-stage index").add_subparsers(
        dest="engine", required=True, metavar="ENGINE"
    )
    retrieve = sub.add_parser("retrieve", help="retrieve a TREC run with a first stage").add_subparsers(
        dest="engine", required=True, metavar="ENGINE"
    )
    from pipeline.first_stage import bm25, colbert

    bm25.register(index, retrieve)
    colbert.register(index, retrieve)


def _register_teacher(sub: argparse._SubParsersAction) -> None:
    """`distillm rerank` (teacher or student: pipeline.rerank) and `distillm merge-shards`."""
    from pipeline.teacher import shards

    rerank.register(sub)
    shards.register(sub)


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
