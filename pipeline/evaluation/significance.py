"""Paired significance tests of runs against a baseline, over per-query values.

IR papers back "A beats B" with a paired test over the queries both runs answer (trec_eval
users, PyTerrier's `Experiment(baseline=...)`, ranx's `compare`): here a two-sided paired
t-test (scipy's `ttest_rel`), p-values adjusted across the runs compared with one baseline
(Holm-Bonferroni by default), and per-query wins, ties and losses.

Queries are paired by id. A run and its baseline are compared over the queries both cover;
when they cover different sets the comparison says how many were left out, and a test needs
at least two shared queries. A p-value is never computed on unpaired values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

CORRECTIONS = ("holm", "bonferroni", "none")
TIE_TOLERANCE = 1e-9  # per-query values closer than this are a tie (float noise of the same ranking)


@dataclass(frozen=True)
class Comparison:
    """One run against the baseline on one measure, over the queries both cover."""

    run: str
    baseline: str
    measure: str
    queries: int  # shared queries the test is over
    left_out: int  # queries of either run the other does not cover
    mean: float  # the run's mean over the shared queries
    baseline_mean: float
    delta: float  # mean - baseline_mean
    t: float | None  # None: no test (identical or constant differences)
    p: float | None
    p_adjusted: float | None
    wins: int
    ties: int
    losses: int

    def record(self) -> dict:
        return asdict(self)


def paired_t_test(values: Sequence[float], baseline: Sequence[float]) -> tuple[float | None, float | None]:
    """Two-sided paired t-test of `values` against `baseline` (same queries, same order): (t, p).

    Identical values give (0.0, 1.0); differences that are all the same non-zero number have no
    variance, so no t exists: (None, None).
    """
    from scipy import stats

    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need the same queries: {a.shape} vs {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired t-test needs at least 2 queries, got {len(a)}")
    diff = a - b
    if np.all(np.abs(diff) <= TIE_TOLERANCE):
        return 0.0, 1.0
    if np.ptp(diff) <= TIE_TOLERANCE:
        return None, None
    result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def adjust(p_values: Sequence[float | None], correction: str = "holm") -> list[float | None]:
    """p-values adjusted for testing them together; None (no test) stays None and is not counted.

    holm: step-down Holm-Bonferroni, adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))
    for p-values in ascending order; bonferroni: min(1, m p); none: unchanged.
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {', '.join(CORRECTIONS)}, not {correction!r}")
    tested = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    m = len(tested)
    if correction == "none":
        for i in tested:
            adjusted[i] = p_values[i]
    elif correction == "bonferroni":
        for i in tested:
            adjusted[i] = min(1.0, m * p_values[i])
    else:
        running = 0.0
        for position, i in enumerate(sorted(tested, key=lambda i: p_values[i])):
            running = max(running, min(1.0, (m - position) * p_values[i]))
            adjusted[i] = running
    return adjusted


def compare(
    per_query: Mapping[str, pd.Series],
    baseline: str,
    measure: str,
    correction: str = "holm",
) -> list[Comparison]:
    """Each run of `per_query` (name -> values indexed by query id) against `baseline`.

    The p-values are adjusted together across the compared runs (the baseline is not compared
    with itself). Raises ValueError when a run shares fewer than 2 queries with the baseline.
    """
    if baseline not in per_query:
        raise ValueError(f"the baseline {baseline!r} is not among the runs {sorted(per_query)}")
    base = per_query[baseline]
    rows = []
    for name, values in per_query.items():
        if name == baseline:
            continue
        shared = values.index.intersection(base.index).sort_values()
        if len(shared) < 2:
            raise ValueError(
                f"{name} and the baseline {baseline} share {len(shared)} evaluated queries: "
                "a paired test needs at least 2 (are they runs over the same query set?)"
            )
        a, b = values.loc[shared].to_numpy(float), base.loc[shared].to_numpy(float)
        t, p = paired_t_test(a, b)
        diff = a - b
        rows.append(
            {
                "run": name,
                "queries": len(shared),
                "left_out": len(values.index.union(base.index)) - len(shared),
                "mean": float(a.mean()),
                "baseline_mean": float(b.mean()),
                "t": t,
                "p": p,
                "wins": int((diff > TIE_TOLERANCE).sum()),
                "losses": int((diff < -TIE_TOLERANCE).sum()),
            }
        )
    adjusted = adjust([r["p"] for r in rows], correction)
    return [
        Comparison(
            run=r["run"],
            baseline=baseline,
            measure=measure,
            queries=r["queries"],
            left_out=r["left_out"],
            mean=r["mean"],
            baseline_mean=r["baseline_mean"],
            delta=r["mean"] - r["baseline_mean"],
            t=r["t"],
            p=r["p"],
            p_adjusted=p_adj,
            wins=r["wins"],
            ties=r["queries"] - r["wins"] - r["losses"],
            losses=r["losses"],
        )
        for r, p_adj in zip(rows, adjusted, strict=True)
    ]


def format_p(p: float | None) -> str:
    """A p-value as papers print it: 3 significant digits, '<0.0001' below that."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"
