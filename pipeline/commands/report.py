"""`distillm report WHAT`: plot data and figures for `dvc plots`.

    distillm report ndcg data/metrics --out data/plots/ndcg.csv [--figure ndcg.png]
    distillm report agreement --pair dl19 TEACHER.run FIRST_STAGE.run [--pair ...] --out agreement.csv [--figure F.png]
    distillm report losses student=data/student/distill/metrics.csv ... --figure data/plots/loss.png

The tables are `pipeline.evaluation.reports`', the figures `pipeline.evaluation.figures`'.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="plot data for `dvc plots` (nDCG per stage, teacher agreement)")
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    n = sub.add_parser("ndcg", help="metrics JSON files -> one CSV row per stage and set")
    n.add_argument(
        "metrics", nargs="+", type=Path, help="files of `distillm evaluate --json` named <set>-<stage>.json, or folders"
    )
    n.add_argument("--out", type=Path, required=True)
    n.add_argument("--figure", type=Path, help="also draw the table as a PNG bar chart")
    n.set_defaults(func=_ndcg)
    a = sub.add_parser("agreement", help="teacher vs first stage, per query: Kendall's tau and top-10 overlap")
    a.add_argument(
        "--pair",
        nargs=3,
        action="append",
        required=True,
        metavar=("NAME", "TEACHER_RUN", "FIRST_STAGE_RUN"),
        help="a teacher run and the first-stage run it re-ranked (repeatable)",
    )
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--figure", type=Path, help="also draw the per-query values as a PNG")
    a.set_defaults(func=_agreement)
    curves = sub.add_parser("losses", help="training loss curves (metrics.csv of distillm train) -> a PNG")
    curves.add_argument("curves", nargs="+", metavar="NAME=METRICS_CSV")
    curves.add_argument("--figure", type=Path, required=True)
    curves.set_defaults(func=_losses)


def _write(frame: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False, float_format="%.6f")


def _ndcg(args: argparse.Namespace) -> None:
    from pipeline.evaluation.reports import ndcg_table

    table = ndcg_table(args.metrics)
    _write(table, args.out)
    if args.figure:
        from pipeline.evaluation.figures import demo_ndcg

        demo_ndcg(table, args.figure)
    log.info("%d stages -> %s", len(table), args.out)


def _agreement(args: argparse.Namespace) -> None:
    from pipeline.evaluation.reports import agreement_table

    table = agreement_table([(name, Path(t), Path(f)) for name, t, f in args.pair])
    _write(table, args.out)
    if args.figure:
        from pipeline.evaluation.figures import agreement

        agreement(table, args.figure)
    summary = table.groupby("set")[["kendall_tau", "top10_overlap"]].mean().round(4).to_dict("index")
    log.info("teacher vs first stage (mean per set): %s -> %s", summary, args.out)


def _losses(args: argparse.Namespace) -> None:
    from pipeline.evaluation.figures import loss_curves

    curves = {}
    for spec in args.curves:
        name, sep, path = spec.partition("=")
        if not sep:
            raise ValueError(f"expected NAME=METRICS_CSV, got {spec!r}")
        if not Path(path).exists():
            raise InputError(path, None, "file not found")
        curves[name] = Path(path)
    loss_curves(curves, args.figure)
