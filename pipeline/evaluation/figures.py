"""Static figures (PNG, matplotlib): what `dvc plots show` embeds as images, so they show offline.

The study's: nDCG@10 per configuration with every seed's point and the spread, and one
student's per-query values against its control. The demo's: nDCG@10 per evaluated run, how
far the teacher moved its first stage, and the training loss curves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

FIRST_STAGE = "first-stage"
MEASURE = "nDCG@10"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight", metadata={"Software": None})  # no version: same bytes


def study_ndcg(summary: dict, values: pd.DataFrame, out: Path) -> None:
    """One panel per held-out fold and one pooled: per configuration each seed's mean (dots), the mean
    across seeds with +-1 sd (bar), the teacher's own value (diamond), the first stage (dashed line)."""
    plt = _pyplot()
    configs = list(summary["configurations"])
    scopes = [*summary["folds"], "pooled"]
    fig, axes = plt.subplots(1, len(scopes), figsize=(4.2 * len(scopes), 4.2), sharey=True)
    x = np.arange(len(configs))
    for ax, scope in zip(axes, scopes, strict=True):
        for i, config in enumerate(configs):
            row = summary["configurations"][config]
            seeds = row[scope]["seeds"]
            jitter = np.linspace(-0.12, 0.12, len(seeds))
            ax.scatter(i + jitter, seeds, s=16, color="tab:blue", alpha=0.7, zorder=3)
            ax.errorbar(i, row[scope]["mean"], yerr=row[scope]["sd"], fmt="_", color="black", ms=14, capsize=4)
            if scope == "pooled" and not row["is_control"]:
                ax.scatter(i, row["teacher_own"]["mean"], marker="D", s=28, facecolors="none", edgecolors="tab:red")
        ax.axhline(summary["first_stage"][scope], ls="--", color="gray", lw=1)
        ax.set_xticks(x, configs, rotation=45, ha="right", fontsize=8)
        title = "both folds" if scope == "pooled" else f"held-out {scope}"
        ax.set_title(f"{title} ({len(summary['seeds'])} seeds)", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(MEASURE)
    handles = [
        plt.Line2D([], [], ls="", marker="o", color="tab:blue", label="one seed"),
        plt.Line2D([], [], ls="", marker="_", color="black", ms=12, label="mean ± sd across seeds"),
        plt.Line2D([], [], ls="--", color="gray", label="BM25 (first stage)"),
        plt.Line2D([], [], ls="", marker="D", mfc="none", color="tab:red", label="teacher's own"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # room for the legend above the panels
    _save(fig, out)
    plt.close(fig)


def student_vs_control(summary: dict, values: pd.DataFrame, config: str, out: Path) -> None:
    """Per held-out query: the student's value (mean over seeds) against its control's."""
    plt = _pyplot()
    row = summary["configurations"][config]
    control = row["vs_control"]["baseline"]
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    for fold, colour in zip(summary["folds"], ("tab:blue", "tab:orange", "tab:green"), strict=False):
        picked = values[values["fold"] == fold]
        student = picked[picked["config"] == config].groupby("qid")["value"].mean()
        base = picked[picked["config"] == control].groupby("qid")["value"].mean()
        ax.scatter(base.loc[student.index], student, s=14, alpha=0.75, color=colour, label=f"held-out {fold}")
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{control} ({MEASURE}, mean of seeds)")
    ax.set_ylabel(f"{config} ({MEASURE}, mean of seeds)")
    c = row["vs_control"]
    ax.set_title(
        f"{c['wins']} above / {c['ties']} on / {c['losses']} below the diagonal; delta {c['delta']:+.3f}, "
        f"p_holm {c['p_adjusted']:.2g}",
        fontsize=8,
    )
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, out)
    plt.close(fig)


def demo_ndcg(table: pd.DataFrame, out: Path) -> None:
    """Horizontal bars: nDCG@10 of every evaluated run (`report ndcg`'s table)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(table) + 1))
    y = np.arange(len(table))[::-1]
    ax.barh(y, table[MEASURE], color="tab:blue")
    for yi, value in zip(y, table[MEASURE], strict=True):
        ax.text(value + 0.005, yi, f"{value:.4f}", va="center", fontsize=8)
    labels = [f"{n} ({q} q.)" for n, q in zip(table["name"], table["queries"], strict=True)]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"{MEASURE} (one run each: see the study for seeds and significance)")
    ax.set_xlim(0, 1)
    _save(fig, out)
    plt.close(fig)


def agreement(table: pd.DataFrame, out: Path) -> None:
    """Kendall's tau between teacher and first stage per query, one row of dots per query set."""
    plt = _pyplot()
    sets = list(dict.fromkeys(table["set"]))
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(sets) + 1.2))
    for i, name in enumerate(sets):
        taus = table[table["set"] == name]["kendall_tau"].to_numpy()
        ax.scatter(taus, np.full(len(taus), i), s=12, alpha=0.6)
        ax.plot([taus.mean()], [i], marker="|", ms=18, color="black")
    ax.set_yticks(range(len(sets)), sets)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Kendall's tau, teacher vs first stage, per query (| = mean)")
    _save(fig, out)
    plt.close(fig)


def loss_curves(curves: dict[str, Path], out: Path) -> None:
    """Training loss per step of each metrics.csv (`distillm train`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, path in curves.items():
        frame = pd.read_csv(path)
        if len(frame):
            ax.plot(frame["step"], frame["loss"], label=name, lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, out)
    plt.close(fig)
