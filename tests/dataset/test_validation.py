"""`distillm validate`: passes on an export, fails (exit 2, offending rows printed) on corrupted copies."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main


def rewrite(dataset: Path, change: Callable[[pd.DataFrame], pd.DataFrame], schema: pa.Schema | None = None) -> None:
    """Apply change to the (single) shard's rows, keeping its schema and metadata unless given another."""
    [shard] = (dataset / "data").glob("*.parquet")
    table = pq.read_table(shard)
    frame = change(table.to_pandas())
    pq.write_table(pa.Table.from_pandas(frame, schema=schema or table.schema, preserve_index=False), shard)


def set_cell(row: int, column: str, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row, column] = value
        return frame

    return change


def test_a_fresh_export_is_valid(dataset_dl19: Path, capsys):
    assert main(["validate", str(dataset_dl19)]) == 0
    assert "valid: 43 queries, 4300 rows, 1 shard(s), depth 100, text: yes" in capsys.readouterr().out


def _first(dataset: Path, row: int) -> tuple[str, str]:
    frame = pd.read_parquet(dataset / "data", columns=["qid", "doc_id"])
    return frame["qid"].iloc[row], frame["doc_id"].iloc[row]


@pytest.mark.parametrize(
    ("corruption", "expected"),
    [
        # row 4 is the first query's rank 5: make it a second rank 4 (score kept consistent)
        (
            "duplicate rank",
            ["{qid}\t{doc}\tduplicate teacher_rank 4 (2 rows have it)", "{qid}\t-\tteacher_rank 5 missing"],
        ),
        ("missing doc", ["{qid}\t-\tteacher_rank 5 missing", "rows: the data has 4299, metadata.json says 4300"]),
        ("rank gap", ["{qid}\t{doc}\tteacher_rank 102 outside 1..100", "{qid}\t-\tteacher_rank 5 missing"]),
        ("score", ["{qid}\t{doc}\tteacher_score 1.5 != 100 - 5 + 1"]),
        ("duplicate doc", ["{qid}\t{dup}\tduplicate doc id {dup} in this query"]),
        ("duplicate first-stage rank", ["{qid}\t{doc}\tduplicate first_stage_rank"]),
        ("schema", ["schema is (", "teacher_rank:int64"]),
    ],
)
def test_corrupted_rows_are_named(dataset_copy: Path, capsys, corruption: str, expected: list[str]):
    (qid, doc), dup = _first(dataset_copy, 4), _first(dataset_copy, 3)[1]
    if corruption == "duplicate rank":
        rewrite(dataset_copy, lambda f: set_cell(4, "teacher_score", 97.0)(set_cell(4, "teacher_rank", 4)(f)))
    elif corruption == "missing doc":
        rewrite(dataset_copy, lambda f: f.drop(index=4))
    elif corruption == "rank gap":
        rewrite(dataset_copy, lambda f: set_cell(4, "teacher_score", -1.0)(set_cell(4, "teacher_rank", 102)(f)))
    elif corruption == "score":
        rewrite(dataset_copy, set_cell(4, "teacher_score", 1.5))
    elif corruption == "duplicate doc":
        rewrite(dataset_copy, set_cell(4, "doc_id", dup))
    elif corruption == "duplicate first-stage rank":
        rewrite(dataset_copy, lambda f: set_cell(4, "first_stage_rank", f["first_stage_rank"].iloc[3])(f))
    else:
        table = pq.read_table(next((dataset_copy / "data").glob("*.parquet")))
        index = table.schema.get_field_index("teacher_rank")
        rewrite(dataset_copy, lambda f: f, table.schema.set(index, pa.field("teacher_rank", pa.int64())))
    assert main(["validate", str(dataset_copy)]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("qid\tdoc_id\tproblem\n")
    for line in expected:
        assert line.format(qid=qid, doc=doc, dup=dup) in captured.out
    assert "INVALID" in captured.err


def test_count_mismatches_with_metadata_and_card(dataset_copy: Path, capsys):
    card = dataset_copy / "README.md"
    card.write_text(card.read_text().replace("| queries | 43 |", "| queries | 44 |"))
    assert main(["validate", str(dataset_copy)]) == 2
    assert "queries: the data has 43, README.md says 44" in capsys.readouterr().out

    meta_path = dataset_copy / "metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "rows": 4400}))
    assert main(["validate", str(dataset_copy)]) == 2
    out = capsys.readouterr().out
    assert "rows: the data has 4300, metadata.json says 4400" in out
    assert "Parquet metadata differs from metadata.json" in out


def test_rows_out_of_order_or_not_contiguous(dataset_copy: Path, capsys):
    qid, doc = _first(dataset_copy, 4)
    swapped = dataset_copy.with_name("swapped")
    shutil.copytree(dataset_copy, swapped)
    rewrite(swapped, lambda f: pd.concat([f.iloc[:4], f.iloc[5:6], f.iloc[4:5], f.iloc[6:]]))  # ranks 4, 6, 5, 7
    assert main(["validate", str(swapped)]) == 2
    assert (
        capsys.readouterr().out == f"qid\tdoc_id\tproblem\n{qid}\t{doc}\trows not ordered by teacher_rank (5 after 6)\n"
    )
    rewrite(dataset_copy, lambda f: pd.concat([f.iloc[:4], f.iloc[5:], f.iloc[4:5]]))  # row moved to the end
    assert main(["validate", str(dataset_copy)]) == 2
    assert f"{qid}\t-\trows of this query are not contiguous" in capsys.readouterr().out


def test_not_a_dataset_directory(tmp_path: Path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    assert "not a dataset directory" in capsys.readouterr().err


def test_a_query_split_across_shards(teacher_dl19: dict[str, Path], tmp_path: Path, capsys):
    from tests.dataset.conftest import export_argv

    out = tmp_path / "sharded"
    assert main(export_argv(teacher_dl19, out, "--shard-rows", "250")) == 0
    first, second = sorted((out / "data").glob("*.parquet"))[:2]
    a, b = pq.read_table(first), pq.read_table(second)
    qid, doc = a["qid"][-1].as_py(), a["doc_id"][-1].as_py()
    pq.write_table(a.slice(0, a.num_rows - 1), first)  # the last row of shard 0 moves to shard 1
    pq.write_table(pa.concat_tables([a.slice(a.num_rows - 1), b]), second)
    assert main(["validate", str(out)]) == 2
    printed = capsys.readouterr().out
    assert f"{qid}\t-\tquery is split across shards" in printed and doc not in printed
    assert "train-00000-of-00022.parquet: 199 rows, metadata.json says 200" in printed
