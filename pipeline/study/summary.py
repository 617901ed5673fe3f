"""The study's report: per-query values of the grid, replicates across seeds, families of paired tests,
the table, `dvc metrics` files and the figures (see pipeline/study/__init__.py; the command: pipeline/commands/study.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract.qrels import load_qrels
from pipeline.contract.run import read_trec_run
from pipeline.evaluation.measures import evaluate
from pipeline.evaluation.significance import adjust, compare
from pipeline.infra.errors import InputError
from pipeline.study.spec import FIRST_STAGE, MEASURE, StudySpec, collect_runs, load_spec, split_config

log = logging.getLogger(__name__)


def _per_query(run: Path, qrels: pd.DataFrame) -> pd.Series:
    """nDCG@10 per judged query (the run must cover every judged query: a held-out score for each)."""
    _, per_query = evaluate(read_trec_run(run), qrels, [MEASURE])
    series = per_query.set_index("qid")["value"]
    missing = sorted(set(qrels["qid"]) - set(series.index))
    if missing:
        raise InputError(
            run, None, f"covers {len(series)} of the {qrels['qid'].nunique()} judged queries: {missing[:5]}"
        )
    return series


def per_query_values(spec: StudySpec, grid: dict[str, dict[tuple[str, int], Path]]) -> pd.DataFrame:
    """Long frame: config, fold, seed, qid, value; the first stage's rows have config FIRST_STAGE, seed -1."""
    rows = []
    for fold in spec.folds.values():
        qrels = load_qrels(fold.qrels)
        rows.append(
            _per_query(fold.first_stage, qrels)
            .rename("value")
            .reset_index()
            .assign(config=FIRST_STAGE, fold=fold.name, seed=-1)
        )
        for config, points in grid.items():
            for seed in spec.seeds:
                series = _per_query(points[(fold.name, seed)], qrels)
                rows.append(series.rename("value").reset_index().assign(config=config, fold=fold.name, seed=seed))
    frame = pd.concat(rows, ignore_index=True)
    return frame[["config", "fold", "seed", "qid", "value"]]


def teacher_quality(spec: StudySpec) -> dict[str, dict]:
    """Each teacher's own nDCG@10 over the held-out folds' queries, pooled: from its runs, and over
    its draws (further runs) when it has them: mean, sd, how many runs."""
    out = {}
    for teacher in spec.teachers.values():
        draws: list[list[Path]] = []
        for fold in spec.folds.values():
            runs = [
                teacher.runs[fold.name],
                *[p for p in teacher.draws.get(fold.name, []) if p != teacher.runs[fold.name]],
            ]
            present = [p for p in runs if p.exists()]
            if len(present) < len(runs):
                log.warning(
                    "%s: %d of its %s runs are not here; using %d",
                    teacher.name,
                    len(runs) - len(present),
                    fold.name,
                    len(present),
                )
            draws.append(present)
        n = min(len(d) for d in draws)
        pooled = []
        for i in range(n):  # draw i: the i-th run of each fold, pooled over the folds' queries
            values = [
                evaluate(read_trec_run(d[i]), load_qrels(fold.qrels), [MEASURE])[1]["value"]
                for d, fold in zip(draws, spec.folds.values(), strict=True)
            ]
            pooled.append(float(pd.concat(values).mean()))
        out[teacher.name] = {
            "mean": float(np.mean(pooled)),
            "sd": float(np.std(pooled, ddof=1)) if n > 1 else None,
            "runs": n,
            "values": pooled,
        }
    return out


def _replicates(values: pd.DataFrame, config: str, seeds: list[int], folds: list[str]) -> dict:
    """Per-fold and pooled means of each seed, and their mean and sd across seeds."""
    rows = values[values["config"] == config]
    record = {}
    for scope in [*folds, "pooled"]:
        picked = rows if scope == "pooled" else rows[rows["fold"] == scope]
        per_seed = [float(picked[picked["seed"] == s]["value"].mean()) for s in seeds]
        record[scope] = {"mean": float(np.mean(per_seed)), "sd": float(np.std(per_seed, ddof=1)), "seeds": per_seed}
    return record


def seed_means(values: pd.DataFrame, config: str) -> pd.Series:
    """Each held-out query's value averaged over the seeds, indexed `fold:qid` (queries pooled)."""
    rows = values[values["config"] == config]
    means = rows.groupby(["fold", "qid"])["value"].mean()
    means.index = [f"{fold}:{qid}" for fold, qid in means.index]
    return means


def paired_tests(series: dict[str, pd.Series], pairs: dict[str, str]) -> dict[str, dict]:
    """Paired tests of run against baseline for each `pairs` item (run -> baseline), Holm-adjusted
    together (one family of claims); run -> Comparison record."""
    tested = [compare({base: series[base], run: series[run]}, base, MEASURE, "none")[0] for run, base in pairs.items()]
    adjusted = adjust([c.p for c in tested], "holm")
    return {c.run: {**c.record(), "p_adjusted": p} for c, p in zip(tested, adjusted, strict=True)}


def summarise(spec: StudySpec, values: pd.DataFrame) -> dict:
    """The study's numbers: per configuration its replicates and three families of tests; the
    first stage's values; the teachers' own."""
    configs = [c for c in dict.fromkeys(values["config"]) if c != FIRST_STAGE]
    split = {c: split_config(c, spec) for c in configs}
    series = {c: seed_means(values, c) for c in [FIRST_STAGE, *configs]}
    control_of = {c: f"{spec.control}-{loss}" for c, (teacher, loss) in split.items() if teacher != spec.control}
    primary_of = {c: f"{teacher}-{spec.loss}" for c, (teacher, loss) in split.items() if loss != spec.loss}
    vs_first = paired_tests(series, {c: FIRST_STAGE for c in configs})
    vs_control = paired_tests(series, {c: b for c, b in control_of.items() if b in series})
    vs_primary = paired_tests(series, {c: b for c, b in primary_of.items() if b in series})
    teachers = teacher_quality(spec)
    first = values[values["config"] == FIRST_STAGE]
    scopes = [*spec.folds, "pooled"]
    rows = {
        config: {
            "teacher": teacher,
            "loss": loss,
            "about": spec.teachers[teacher].about,
            "is_control": teacher == spec.control,
            "teacher_own": teachers[teacher],
            **_replicates(values, config, spec.seeds, list(spec.folds)),
            "vs_first_stage": vs_first[config],
            "vs_control": vs_control.get(config),
            "vs_primary_loss": vs_primary.get(config),
        }
        for config, (teacher, loss) in split.items()
    }
    return {
        "measure": MEASURE,
        "seeds": spec.seeds,
        "folds": {
            f.name: {"train": f.train, "queries": int((first["fold"] == f.name).sum())} for f in spec.folds.values()
        },
        "queries": len(series[FIRST_STAGE]),
        "first_stage": {s: float(first[(first["fold"] == s) | (s == "pooled")]["value"].mean()) for s in scopes},
        "test": "paired two-sided t-test over held-out queries (each query's value: its mean over the seeds); "
        "Holm-adjusted within each family (vs first stage, vs control, vs primary loss)",
        "configurations": rows,
    }


def _cell(c: dict | None, alpha: float = 0.05) -> str:
    """'+0.012, p 0.61 (50/1/46)': delta, Holm-adjusted p (* below alpha), wins/ties/losses."""
    from pipeline.evaluation.significance import format_p

    if c is None:
        return ""
    star = " *" if c["p_adjusted"] is not None and c["p_adjusted"] < alpha else ""
    return f"{c['delta']:+.3f}, p {format_p(c['p_adjusted'])}{star} ({c['wins']}/{c['ties']}/{c['losses']})"


def markdown_table(summary: dict, set_names: dict[str, str] | None = None) -> str:
    """The study's table: one row per configuration (and the first stage), mean ± sd across seeds."""
    folds = list(summary["folds"])
    names = set_names or {}
    head = ["configuration", "teacher's own", *[f"held-out {names.get(f, f)}" for f in folds]]
    head += [f"both ({summary['queries']} queries)", "vs BM25", "vs control", "vs primary loss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = summary["first_stage"]
    lines.append(
        "| BM25 (first stage) | | " + " | ".join(f"{first[f]:.4f}" for f in folds) + f" | {first['pooled']:.4f} | | | |"
    )
    for config, row in summary["configurations"].items():
        own = row["teacher_own"]
        own_cell = f"{own['mean']:.4f}" + (f" ± {own['sd']:.4f} ({own['runs']} runs)" if own["runs"] > 1 else "")
        if row["is_control"]:
            own_cell = "(first stage's order)"
        cells = [f"{row[s]['mean']:.4f} ± {row[s]['sd']:.4f}" for s in [*folds, "pooled"]]
        label = f"{config} (control)" if row["is_control"] else config
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    own_cell,
                    *cells,
                    _cell(row["vs_first_stage"]),
                    _cell(row["vs_control"]),
                    _cell(row["vs_primary_loss"]),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_report(spec_path: str | Path, runs_dir: str | Path, out: str | Path) -> dict:
    """Everything the report writes under OUT: summary.json, summary.md, per_query.tsv, metrics/<config>.json
    (`dvc metrics`), ndcg.png and per_query.png (`dvc plots`, images: no internet needed)."""
    from pipeline.evaluation import figures

    spec = load_spec(spec_path)
    grid = collect_runs(runs_dir, spec)
    values = per_query_values(spec, grid)
    summary = summarise(spec, values)
    out = Path(out)
    (out / "metrics").mkdir(parents=True, exist_ok=True)
    values.to_csv(out / "per_query.tsv", sep="\t", index=False, float_format="%.6f")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown_table(summary)
    (out / "summary.md").write_text(
        f"{MEASURE}: mean ± sd across seeds {summary['seeds']}; tests: {summary['test']}; "
        "cells 'delta, p (wins/ties/losses)', * p < 0.05.\n\n" + table
    )
    for old in (out / "metrics").glob("*.json"):
        old.unlink()
    for config, row in summary["configurations"].items():
        record = {
            MEASURE: round(row["pooled"]["mean"], 4),
            "sd": round(row["pooled"]["sd"], 4),
            "seeds": len(summary["seeds"]),
            "queries": summary["queries"],
            "vs_bm25": round(row["vs_first_stage"]["delta"], 4),
            "p_bm25": _round_p(row["vs_first_stage"]["p_adjusted"]),
            "vs_control": None if row["vs_control"] is None else round(row["vs_control"]["delta"], 4),
            "p_control": None if row["vs_control"] is None else _round_p(row["vs_control"]["p_adjusted"]),
            "about": f"study: {row['about']} ({row['loss']}); mean of {len(summary['seeds'])} seeds, both folds",
        }
        (out / "metrics" / f"{config}.json").write_text(json.dumps(record, indent=2) + "\n")
    figures.study_ndcg(summary, values, out / "ndcg.png")
    student = next((c for c, r in summary["configurations"].items() if r["vs_control"] is not None), None)
    if student is not None:
        figures.student_vs_control(summary, values, student, out / "per_query.png")
    log.info("study report -> %s", out)
    return summary


def _round_p(p: float | None) -> float | None:
    return None if p is None else float(f"{p:.4g}")
