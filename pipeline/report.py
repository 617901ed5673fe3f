"""Reports: nDCG@10 of every stage, how much the teacher reorders the first stage, loss curves,
(a study's aggregate over seeds and folds: `distillm study report`, pipeline/study).

    distillm report ndcg data/metrics --out data/plots/ndcg.csv [--figure ndcg.png]
    distillm report agreement --pair dl19 TEACHER.run FIRST_STAGE.run [--pair ...] --out agreement.csv [--figure F.png]
    distillm report losses student=data/student/distill/metrics.csv ... --figure data/plots/loss.png

Tables are CSV; figures are PNG (`pipeline.figures`), which `dvc plots show` embeds as images,
so nothing needs the internet to show them.

`ndcg` turns the JSON files of `distillm evaluate --json` (named `<set>-<stage>.json`, or a
folder of them) into one row per file: name, set, stage, nDCG@10, queries, about. `agreement` compares each query's teacher
ranking with the first-stage ranking it re-ranked, over the documents the teacher ranked:
Kendall's tau (1: order kept, -1: reversed) and the overlap of the two top-10s. A teacher
that barely moves the first stage teaches little; a random one scores tau near 0.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract.run import ranked_lists, read_trec_run
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)

NDCG = "nDCG@10"


def ndcg_table(paths: list[Path]) -> pd.DataFrame:
    """One row per metrics file `<set>-<stage>.json` (files, or folders of them): name, set, stage,
    nDCG@10, queries, about; in set order, then as the files are named."""
    files = [f for p in map(Path, paths) for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])]
    rows = []
    for path in files:
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise InputError(path, None, f"cannot read metrics JSON: {e}") from None
        if NDCG not in record:
            raise InputError(path, None, f"no {NDCG} in this metrics file (run `distillm evaluate -m {NDCG} --json`)")
        eval_set, _, stage = path.stem.partition("-")
        rows.append(
            {
                "name": path.stem,
                "set": eval_set,
                "stage": stage or eval_set,
                NDCG: record[NDCG],
                "queries": record.get("queries"),
                "about": record.get("about", ""),
            }
        )
    if not rows:
        raise InputError(paths[0] if paths else None, None, "no metrics files")
    columns = ["name", "set", "stage", NDCG, "queries", "about"]
    return pd.DataFrame(rows, columns=columns).sort_values("set", kind="stable", ignore_index=True)


def kendall_tau(order: list[str], reference: list[str]) -> float:
    """Kendall's tau-a between two orderings of the same items (1.0 for fewer than 2 items)."""
    if set(order) != set(reference) or len(order) != len(reference):
        raise ValueError("kendall_tau needs two orderings of the same items")
    n = len(order)
    if n < 2:
        return 1.0
    position = {doc: i for i, doc in enumerate(reference)}
    ranks = np.array([position[doc] for doc in order])
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    concordant = (ranks[None, :] > ranks[:, None])[upper].sum()
    return float(2.0 * concordant / (n * (n - 1) / 2) - 1.0)


def agreement_table(pairs: list[tuple[str, Path, Path]]) -> pd.DataFrame:
    """Per (set, query): Kendall's tau between the teacher's order and the first stage's order of the
    documents the teacher ranked, and the overlap of their top-10s."""
    rows = []
    for name, teacher_path, first_stage_path in pairs:
        teacher, first = ranked_lists(read_trec_run(teacher_path)), ranked_lists(read_trec_run(first_stage_path))
        for qid, docs in teacher.items():
            if qid not in first:
                raise InputError(first_stage_path, None, f"query {qid!r} of {teacher_path} is not in this run")
            ranked = set(docs)
            reference = [doc for doc in first[qid] if doc in ranked]
            if len(reference) != len(docs):
                raise InputError(
                    teacher_path, None, f"query {qid!r}: the teacher ranked documents {first_stage_path} does not hold"
                )
            rows.append(
                {
                    "set": name,
                    "qid": qid,
                    "query": f"{name}:{qid}",
                    "documents": len(docs),
                    "kendall_tau": round(kendall_tau(docs, reference), 6),
                    "top10_overlap": len(set(docs[:10]) & set(first[qid][:10])) / min(10, len(docs)),
                }
            )
    return pd.DataFrame(rows, columns=["set", "qid", "query", "documents", "kendall_tau", "top10_overlap"])


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
    table = ndcg_table(args.metrics)
    _write(table, args.out)
    if args.figure:
        from pipeline.figures import demo_ndcg

        demo_ndcg(table, args.figure)
    log.info("%d stages -> %s", len(table), args.out)


def _agreement(args: argparse.Namespace) -> None:
    table = agreement_table([(name, Path(t), Path(f)) for name, t, f in args.pair])
    _write(table, args.out)
    if args.figure:
        from pipeline.figures import agreement

        agreement(table, args.figure)
    summary = table.groupby("set")[["kendall_tau", "top10_overlap"]].mean().round(4).to_dict("index")
    log.info("teacher vs first stage (mean per set): %s -> %s", summary, args.out)


def _losses(args: argparse.Namespace) -> None:
    from pipeline.figures import loss_curves

    curves = {}
    for spec in args.curves:
        name, sep, path = spec.partition("=")
        if not sep:
            raise ValueError(f"expected NAME=METRICS_CSV, got {spec!r}")
        if not Path(path).exists():
            raise InputError(path, None, "file not found")
        curves[name] = Path(path)
    loss_curves(curves, args.figure)
