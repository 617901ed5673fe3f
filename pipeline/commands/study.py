"""`distillm study prepare|report`: a grid of students over teachers, folds and seeds.

    distillm study prepare --spec study/params.yaml --corpus data/ingest/corpus --out study/data
    distillm study report --spec study/params.yaml --runs study/runs --out study/results

The spec and the folds' inputs are `pipeline.study.spec`'s, the aggregation `pipeline.study.summary`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("study", help="a grid of students over teachers, folds and seeds: prepare, report")
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    prep = sub.add_parser("prepare", help="each fold's training inputs (first stage, qrels, teacher rankings)")
    prep.add_argument("--spec", type=Path, required=True, help="the study's spec (study/params.yaml)")
    prep.add_argument("--corpus", type=Path, required=True, help="corpus store the training passages must be in")
    prep.add_argument("--out", type=Path, required=True, help="folder for <fold>/{train.run,train.qrels,teacher-*.run}")
    prep.set_defaults(func=_prepare)
    rep = sub.add_parser("report", help="the grid's runs -> mean and sd across seeds, paired tests, table, figures")
    rep.add_argument("--spec", type=Path, required=True, help="the study's spec (study/params.yaml)")
    rep.add_argument("--runs", type=Path, required=True, help="RUNS/<teacher>-<loss>/<fold>-<seed>.run")
    rep.add_argument(
        "--out", type=Path, required=True, help="folder for summary.{json,md}, per_query.tsv, metrics/, *.png"
    )
    rep.set_defaults(func=_report)


def _prepare(args: argparse.Namespace) -> None:
    from pipeline.study.spec import load_spec, prepare

    prepare(load_spec(args.spec), args.corpus, args.out)


def _report(args: argparse.Namespace) -> None:
    from pipeline.study.summary import markdown_table, write_report

    summary = write_report(args.spec, args.runs, args.out)
    print(markdown_table(summary), end="")
