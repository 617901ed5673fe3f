"""Report tables: nDCG@10 of every stage, how much the teacher reorders the first stage (`distillm
report`: `pipeline.commands.report`; a study's aggregate over seeds and folds: `pipeline.study`).

Tables are CSV; figures are PNG (`pipeline.evaluation.figures`), which `dvc plots show` embeds as
images, so nothing needs the internet to show them.

`ndcg` turns the JSON files of `distillm evaluate --json` (named `<set>-<stage>.json`, or a
folder of them) into one row per file: name, set, stage, nDCG@10, queries, about. `agreement` compares each query's teacher
ranking with the first-stage ranking it re-ranked, over the documents the teacher ranked:
Kendall's tau (1: order kept, -1: reversed) and the overlap of the two top-10s. A teacher
that barely moves the first stage teaches little; a random one scores tau near 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract.run import ranked_lists, read_trec_run
from pipeline.infra.errors import InputError

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
