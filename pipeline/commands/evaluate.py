"""`distillm evaluate`: TREC runs against qrels (ir-measures), and compared with a baseline.

    distillm evaluate RUN --qrels QRELS [-m nDCG@10 ...] [--json M.json] [--per-query PQ.tsv]
    distillm evaluate RUN... --qrels QRELS --baseline RUN [--correction holm|bonferroni|none]

The measures are `pipeline.evaluation.measures.evaluate`'s. With `--baseline`, every other run
is compared with it query by query (`pipeline.evaluation.significance`: paired two-sided t-test
over the queries both cover, p-values adjusted across the compared runs, wins/ties/losses); this
module prints the table (one row per run) and writes the JSON and per-query files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from pipeline.contract.qrels import load_qrels
from pipeline.evaluation.measures import DEFAULT_MEASURES, Evaluated, evaluate_run, parse_measures
from pipeline.evaluation.significance import CORRECTIONS, Comparison, compare, format_p


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate TREC runs against qrels (ir-measures); compare them with a baseline (paired t-test)"
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="TREC run file, or NAME=FILE to name it in the table")
    p.add_argument("--qrels", required=True, help="qrels file or irds:<dataset id>")
    p.add_argument(
        "-m",
        "--measure",
        action="append",
        dest="measures",
        help="ir-measures measure name (repeatable; default nDCG@10), e.g. 'RR(rel=2)@10'",
    )
    p.add_argument(
        "--baseline",
        metavar="RUN",
        help="compare every other run with this one (a RUN's file or NAME, or another file): paired two-sided t-test",
    )
    p.add_argument(
        "--correction",
        choices=CORRECTIONS,
        default="holm",
        help="adjust the p-values across the compared runs (default: holm = Holm-Bonferroni)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level marked with * (default: 0.05)")
    p.add_argument(
        "--per-query",
        type=Path,
        help="also write per-query values to this TSV (qid, measure, value; run first if several)",
    )
    p.add_argument(
        "--json",
        type=Path,
        help="write the values to this JSON file (one run: {measure: value, queries} for `dvc metrics`; "
        "several: means, coverage and comparisons)",
    )
    p.add_argument("--about", help="what the run is, written beside the values in --json (a `dvc metrics show` column)")
    p.add_argument(
        "--all-judged", action="store_true", help="average over all judged queries, missing ones as 0 (trec_eval -c)"
    )
    p.set_defaults(func=run)


def _named_runs(specs: list[str], baseline: str | None) -> tuple[list[tuple[str, Path]], str | None]:
    """(name, path) of each RUN (`NAME=FILE`, or a file named by its stem, or by its path when stems
    repeat) and the baseline's name: a RUN's name or file, or another file (then added to the runs)."""

    def parse(spec: str) -> tuple[str | None, Path]:
        name, sep, path = spec.partition("=")
        return (name, Path(path)) if sep and not Path(spec).exists() else (None, Path(spec))

    runs = [parse(spec) for spec in specs]
    base = None
    if baseline is not None:
        by_name = [i for i, (name, _) in enumerate(runs) if name == baseline]
        by_path = [i for i, (_, path) in enumerate(runs) if path.resolve() == parse(baseline)[1].resolve()]
        if not Path(baseline).exists() and by_name:
            base = by_name[0]
        elif by_path:
            base = by_path[0]
        else:
            runs.append(parse(baseline))
            base = len(runs) - 1
    stems = [p.stem for p in {p.resolve(): p for name, p in runs if name is None}.values()]
    named = [(name or (p.stem if stems.count(p.stem) == 1 else str(p)), p) for name, p in runs]
    return named, None if base is None else named[base][0]


def _evaluate_runs(args: argparse.Namespace, runs: list[tuple[str, Path]], qrels: pd.DataFrame) -> list[Evaluated]:
    measures = args.measures or DEFAULT_MEASURES
    judged = set(qrels["qid"])
    evaluated = []
    for name, path in runs:
        evaluated.append(evaluate_run(name, path, qrels, args.qrels, measures, args.all_judged))
        missing = evaluated[-1].judged_missing
        if missing and len(runs) > 1:
            how = (
                "they count 0 (--all-judged)"
                if args.all_judged
                else "as trec_eval, its mean is over the judged queries it covers (--all-judged counts them as 0)"
            )
            print(f"# {name}: {missing} of the {len(judged)} judged queries are not in the run; {how}", file=sys.stderr)
    return evaluated


def run(args: argparse.Namespace) -> int:
    qrels = load_qrels(args.qrels)
    runs, baseline = _named_runs(args.runs, args.baseline)
    evaluated = _evaluate_runs(args, runs, qrels)
    if len(evaluated) == 1:
        return _single(args, evaluated[0], qrels)
    measures = [str(m) for m in parse_measures(args.measures or DEFAULT_MEASURES)]
    comparisons = {}
    if baseline is not None:
        for measure in measures:
            per_query = {
                e.name: e.per_query[e.per_query["measure"] == measure].set_index("qid")["value"] for e in evaluated
            }
            comparisons[measure] = compare(per_query, baseline, measure, args.correction)
            for c in comparisons[measure]:
                if c.left_out:
                    print(
                        f"# {c.run} vs {baseline}: compared over the {c.queries} queries both cover "
                        f"({c.left_out} covered by only one of them left out)",
                        file=sys.stderr,
                    )
    for measure in measures:
        print(_table(evaluated, measure, baseline, comparisons.get(measure, []), args, qrels["qid"].nunique()))
    if args.per_query:
        frames = [e.per_query.assign(run=e.name)[["run", "qid", "measure", "value"]] for e in evaluated]
        args.per_query.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames).to_csv(args.per_query, sep="\t", index=False, float_format="%.6f")
    if args.json:
        record = {
            "qrels": str(args.qrels),
            "measures": measures,
            "all_judged": args.all_judged,
            "runs": {
                e.name: {
                    "path": str(e.path),
                    **e.values,
                    "queries": int(e.per_query["qid"].nunique()),
                    "judged_missing": e.judged_missing,
                }
                for e in evaluated
            },
            "baseline": baseline,
            "correction": args.correction if baseline else None,
            "test": "paired two-sided t-test (scipy.stats.ttest_rel)" if baseline else None,
            "comparisons": [c.record() for measure in measures for c in comparisons.get(measure, [])],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


def _single(args: argparse.Namespace, e: Evaluated, qrels: pd.DataFrame) -> int:
    """One run: the values, one per line (what `evaluate` always printed), and --json for `dvc metrics`."""
    n_queries = e.per_query["qid"].nunique()
    for name, value in e.values.items():
        print(f"{name}\t{value:.4f}")
    print(f"# {n_queries} queries evaluated ({e.run_queries} in run, {qrels['qid'].nunique()} judged)", file=sys.stderr)
    if args.per_query:
        args.per_query.parent.mkdir(parents=True, exist_ok=True)
        e.per_query.to_csv(args.per_query, sep="\t", index=False, float_format="%.6f")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {**e.values, "queries": int(n_queries), **({"about": args.about} if args.about else {})}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


def _table(
    evaluated: list[Evaluated],
    measure: str,
    baseline: str | None,
    comparisons: list[Comparison],
    args: argparse.Namespace,
    judged: int,
) -> str:
    """The table on stdout: one row per run, the baseline first; tests when there is a baseline."""
    by_run = {c.run: c for c in comparisons}
    head = f"{measure} ({judged} judged queries"
    if baseline:
        correction = {"holm": "Holm-Bonferroni", "bonferroni": "Bonferroni", "none": "no correction"}[args.correction]
        head += (
            f"; paired two-sided t-test against {baseline}, p adjusted across {len(comparisons)} "
            f"run{'s' if len(comparisons) != 1 else ''} ({correction}); "
            f"* p_adj < {args.alpha:g}"
        )
    lines = [head + ")"]
    width = max(len(e.name) for e in evaluated) + len(" (baseline)")
    columns = f"{'run':<{width}}  {'queries':>7}  {measure:>9}"
    if baseline:
        columns += f"  {'delta':>8}  {'t':>7}  {'p':>8}  {'p_adj':>8}  {'W/T/L':>9}"
    lines.append(columns)
    order = sorted(evaluated, key=lambda e: e.name != baseline)
    for e in order:
        queries = int(e.per_query["qid"].nunique())
        label = f"{e.name} (baseline)" if e.name == baseline else e.name
        row = f"{label:<{width}}  {queries:>7}  {e.values[measure]:>9.4f}"
        c = by_run.get(e.name)
        if c is not None:
            t = "-" if c.t is None else f"{c.t:.2f}"
            star = " *" if c.p_adjusted is not None and c.p_adjusted < args.alpha else ""
            row += (
                f"  {c.delta:>+8.4f}  {t:>7}  {format_p(c.p):>8}  {format_p(c.p_adjusted):>8}"
                f"  {f'{c.wins}/{c.ties}/{c.losses}':>9}{star}"
            )
        lines.append(row)
    return "\n".join(lines)
