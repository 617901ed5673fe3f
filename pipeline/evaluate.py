"""Evaluation of a TREC run against qrels with ir-measures (pytrec_eval; trec_eval's values).

Like trec_eval, a query counts if it is in both the run and the qrels, and the ranking
is by score. TREC DL binary measures need `rel=2`, e.g. `RR(rel=2)@10`, `R(rel=2)@100`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ir_measures
import pandas as pd

from pipeline.errors import InputError
from pipeline.io.sources import load_qrels
from pipeline.io.trec import read_trec_run

DEFAULT_MEASURES = ("nDCG@10",)


def parse_measures(names: list[str] | tuple[str, ...]) -> list:
    """ir-measures measure objects from names such as 'nDCG@10' or 'RR(rel=2)@10'."""
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except (NameError, ValueError, SyntaxError, TypeError) as e:
            raise ValueError(f"unknown measure {name!r} ({e}); see https://ir-measur.es") from None
    return measures


def evaluate(
    run: pd.DataFrame,
    qrels: pd.DataFrame,
    measures: list[str] | tuple[str, ...] = DEFAULT_MEASURES,
    all_judged: bool = False,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Aggregate values {measure: value} and a per-query frame (qid, measure, value).

    As trec_eval, the mean is over the judged queries that are in the run; with
    all_judged (trec_eval -c) a judged query missing from the run counts as 0.
    """
    parsed = parse_measures(measures)
    if not all_judged:
        qrels = qrels[qrels["qid"].isin(set(run["qid"]))]
    run_frame = pd.DataFrame({"query_id": run["qid"], "doc_id": run["doc_id"], "score": run["score"]})
    qrels_frame = pd.DataFrame({"query_id": qrels["qid"], "doc_id": qrels["doc_id"], "relevance": qrels["relevance"]})
    per_query = pd.DataFrame(
        [(m.query_id, str(m.measure), m.value) for m in ir_measures.iter_calc(parsed, qrels_frame, run_frame)],
        columns=["qid", "measure", "value"],
    )
    aggregate = {
        str(measure): float(value)
        for measure, value in ir_measures.calc_aggregate(parsed, qrels_frame, run_frame).items()
    }
    return {str(m): aggregate[str(m)] for m in parsed}, per_query


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a TREC run against qrels (ir-measures)")
    p.add_argument("run", type=Path, help="TREC run file")
    p.add_argument("--qrels", required=True, help="qrels file or irds:<dataset id>")
    p.add_argument(
        "-m",
        "--measure",
        action="append",
        dest="measures",
        help="ir-measures measure name (repeatable; default nDCG@10), e.g. 'RR(rel=2)@10'",
    )
    p.add_argument("--per-query", type=Path, help="also write per-query values to this TSV (qid, measure, value)")
    p.add_argument("--json", type=Path, help="write the aggregate values to this JSON file (for `dvc metrics`)")
    p.add_argument("--about", help="what the run is, written beside the values in --json (a `dvc metrics show` column)")
    p.add_argument(
        "--all-judged", action="store_true", help="average over all judged queries, missing ones as 0 (trec_eval -c)"
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    run = read_trec_run(args.run)  # a run without rankings raises InputError (status 2)
    qrels = load_qrels(args.qrels)
    if not set(run["qid"]) & set(qrels["qid"]):
        raise InputError(
            args.run, None, f"none of its {run['qid'].nunique()} queries is judged in {args.qrels}: nothing to evaluate"
        )
    values, per_query = evaluate(run, qrels, args.measures or DEFAULT_MEASURES, args.all_judged)
    n_queries = per_query["qid"].nunique()
    for name, value in values.items():
        print(f"{name}\t{value:.4f}")
    print(
        f"# {n_queries} queries evaluated ({run['qid'].nunique()} in run, {qrels['qid'].nunique()} judged)",
        file=sys.stderr,
    )
    if args.per_query:
        args.per_query.parent.mkdir(parents=True, exist_ok=True)
        per_query.to_csv(args.per_query, sep="\t", index=False, float_format="%.6f")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {**values, "queries": int(n_queries), **({"about": args.about} if args.about else {})}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0
