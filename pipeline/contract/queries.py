"""Queries: TSV `qid<TAB>text` or JSONL `{"qid", "text"}` files, or `irds:<id>`; every query has text.

In memory queries are `{qid: text}` in file order (the order they were read in).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.contract.irds import irds_dataset, irds_records, is_irds
from pipeline.contract.lines import first_key, iter_lines, json_object
from pipeline.infra.errors import InputError

_QID_KEYS = ("qid", "query_id", "_id", "id")
_TEXT_KEYS = ("text", "query", "title")


def read_queries(path: str | Path) -> dict[str, str]:
    """Read queries into {qid: text}, in file order.

    `.jsonl` / `.json` lines are JSON objects (qid under qid/query_id/_id/id, text under
    text/query/title); anything else is TSV. An empty (or whitespace-only) query text, a
    missing field or a repeated qid raises InputError naming the line; a file without any
    query raises too.
    """
    path = Path(path)
    jsonl = path.name.endswith((".jsonl", ".jsonl.gz", ".json"))
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        if jsonl:
            qid, text = _parse_json_query(path, number, line)
        else:
            qid, sep, text = line.partition("\t")
            if not sep:
                raise InputError(path, number, "expected 'qid<TAB>text'")
        qid = qid.strip()
        if not qid:
            raise InputError(path, number, "empty query id")
        if not text.strip():
            raise InputError(path, number, f"query {qid!r} has empty text")
        if qid in queries:
            raise InputError(path, number, f"query {qid!r} already defined on line {first_line[qid]}")
        queries[qid] = text.strip()
        first_line[qid] = number
    if not queries:
        raise InputError(path, None, "no queries (empty file)")
    return queries


def _parse_json_query(path: Path, number: int, line: str) -> tuple[str, str]:
    record = json_object(path, number, line)
    qid, text = first_key(record, _QID_KEYS), first_key(record, _TEXT_KEYS)
    if qid is None or text is None:
        raise InputError(path, number, f"expected a query id ({'/'.join(_QID_KEYS)}) and text ({'/'.join(_TEXT_KEYS)})")
    return str(qid), str(text)


def load_queries(spec: str | Path) -> dict[str, str]:
    """{qid: text} from a query file or `irds:` id (empty query texts raise InputError)."""
    spec = str(spec)
    if not is_irds(spec):
        return read_queries(spec)
    dataset = irds_dataset(spec)
    queries: dict[str, str] = {}
    for number, query in enumerate(irds_records(spec, "queries", dataset.queries_iter), start=1):
        if not query.text.strip():
            raise InputError(spec, number, f"query {query.query_id!r} has empty text")
        queries[str(query.query_id)] = query.text.strip()
    return queries


def write_queries(queries: dict[str, str], path: str | Path) -> None:
    """Write {qid: text} as TSV. Tabs and newlines inside text become spaces (TSV cannot hold them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(f"{qid}\t{' '.join(text.split())}\n")
