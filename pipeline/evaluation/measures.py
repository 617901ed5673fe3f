"""Measures of TREC runs against qrels with ir-measures (pytrec_eval; trec_eval's values).

Like trec_eval, a query counts if it is in both the run and the qrels, and the ranking
is by score. TREC DL binary measures need `rel=2`, e.g. `RR(rel=2)@10`, `R(rel=2)@100`.
(`distillm evaluate`: `pipeline.commands.evaluate`; paired comparison of runs:
`pipeline.evaluation.significance`.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ir_measures
import pandas as pd

from pipeline.contract.run import read_trec_run
from pipeline.infra.errors import InputError

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


@dataclass(frozen=True)
class Evaluated:
    """One run's values: the mean per measure and the per-query frame (qid, measure, value)."""

    name: str
    path: Path
    values: dict[str, float]
    per_query: pd.DataFrame
    run_queries: int
    judged_missing: int  # judged queries the run does not cover (as trec_eval: not in its mean)


def evaluate_run(
    name: str,
    path: Path,
    qrels: pd.DataFrame,
    qrels_source: str,
    measures: list[str] | tuple[str, ...] = DEFAULT_MEASURES,
    all_judged: bool = False,
) -> Evaluated:
    """A run file's values; InputError for a run without rankings or none of whose queries is judged."""
    run = read_trec_run(path)  # a run without rankings raises InputError (status 2)
    qids, judged = set(run["qid"]), set(qrels["qid"])
    if not qids & judged:
        raise InputError(
            path, None, f"none of its {len(qids)} queries is judged in {qrels_source}: nothing to evaluate"
        )
    values, per_query = evaluate(run, qrels, measures, all_judged)
    return Evaluated(name, path, values, per_query, len(qids), len(judged - qids))
