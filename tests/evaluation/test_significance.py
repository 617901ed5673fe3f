"""Paired tests and corrections against values computed by hand (closed forms, not scipy's ttest_rel)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import betainc

from pipeline.evaluation.significance import adjust, compare, format_p, paired_t_test


def t_and_p_by_hand(a: list[float], b: list[float]) -> tuple[float, float]:
    """t = mean(d) / (sd(d) / sqrt(n)); two-sided p = I_{df/(df+t^2)}(df/2, 1/2) (Student's t tail)."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    df = n - 1
    return t, float(betainc(df / 2, 0.5, df / (df + t * t)))


def test_t_test_with_one_degree_of_freedom_is_the_cauchy_tail():
    # d = [0.1, 0.3]: mean 0.2, sd sqrt(0.02), t = 0.2 / (sqrt(0.02) / sqrt(2)) = 2; df 1: p = 1 - 2 atan(2) / pi
    t, p = paired_t_test([0.5, 0.7], [0.4, 0.4])
    assert t == pytest.approx(2.0)
    assert p == pytest.approx(1 - 2 * math.atan(2.0) / math.pi)


def test_t_test_matches_the_formula():
    a, b = [0.5, 0.7, 0.2, 0.9, 0.35], [0.4, 0.4, 0.3, 0.6, 0.5]
    t, p = paired_t_test(a, b)
    t_hand, p_hand = t_and_p_by_hand(a, b)
    assert t == pytest.approx(t_hand) and p == pytest.approx(p_hand)
    assert t_hand == pytest.approx(0.94345, abs=1e-5)  # on paper: d mean 0.09, sd sqrt(0.182 / 4), n 5


def test_identical_and_constant_differences():
    assert paired_t_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == (0.0, 1.0)
    assert paired_t_test([0.2, 0.3, 0.4], [0.1, 0.2, 0.3]) == (None, None)  # no variance: no t
    with pytest.raises(ValueError, match="at least 2 queries"):
        paired_t_test([0.5], [0.4])
    with pytest.raises(ValueError, match="same queries"):
        paired_t_test([0.5, 0.1], [0.4])


def test_holm_and_bonferroni_by_hand():
    p = [0.01, 0.04, 0.03]
    # Holm: ascending 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06
    assert adjust(p, "holm") == pytest.approx([0.03, 0.06, 0.06])
    assert adjust(p, "bonferroni") == pytest.approx([0.03, 0.12, 0.09])
    assert adjust(p, "none") == p
    assert adjust([0.5, None, 0.6], "bonferroni") == [1.0, None, 1.0]  # a run without a test is not counted
    assert adjust([0.02, None], "holm") == [0.02, None]
    with pytest.raises(ValueError, match="correction"):
        adjust(p, "fdr")


def test_compare_pairs_queries_by_id_and_counts_wins():
    base = pd.Series([0.4, 0.4, 0.3, 0.6, 0.5], index=["q1", "q2", "q3", "q4", "q5"])
    run = pd.Series([0.35, 0.9, 0.2, 0.7, 0.5], index=["q5", "q4", "q3", "q2", "q1"])  # other order, same ids
    partial = pd.Series([0.9, 0.9, 0.9], index=["q1", "q2", "q9"])  # q9 is not in the baseline
    rows = {c.run: c for c in compare({"base": base, "run": run, "partial": partial}, "base", "nDCG@10")}
    c = rows["run"]
    t, p = t_and_p_by_hand([0.5, 0.7, 0.2, 0.9, 0.35], [0.4, 0.4, 0.3, 0.6, 0.5])
    assert (c.queries, c.left_out, c.t, c.p) == (5, 0, pytest.approx(t), pytest.approx(p))
    assert (c.wins, c.ties, c.losses) == (3, 0, 2)
    assert c.delta == pytest.approx(0.09) and c.baseline_mean == pytest.approx(0.44)
    assert rows["partial"].queries == 2 and rows["partial"].left_out == 4  # q3, q4, q5 and q9
    # Holm over the two tests
    assert c.p_adjusted == pytest.approx(adjust([c.p, rows["partial"].p])[0])


def test_compare_refuses_runs_without_shared_queries():
    base = pd.Series([0.4, 0.5], index=["q1", "q2"])
    other = pd.Series([0.4, 0.5], index=["q3", "q2"])
    with pytest.raises(ValueError, match="share 1 evaluated queries"):
        compare({"base": base, "other": other}, "base", "nDCG@10")
    with pytest.raises(ValueError, match="not among the runs"):
        compare({"other": other}, "base", "nDCG@10")


def test_format_p():
    assert [format_p(p) for p in (None, 0.5, 0.01234, 3e-6, float("nan"))] == ["-", "0.5000", "0.0123", "<0.0001", "-"]
    assert np.isclose(float(format_p(0.04999)), 0.05)
