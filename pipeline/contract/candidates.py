"""rank_llm's candidate JSON: `[{"query": str, "hits": [{"qid", "docid", "content", "rank", "score"}]}]`.

It is a run with the passage text inlined (the shared TREC DL files use it). Reading it
gives the three things of the data contract: queries, passages and a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract.corpus import Passage
from pipeline.contract.lines import decode_utf8
from pipeline.contract.run import RUN_COLUMNS
from pipeline.infra.errors import InputError


@dataclass
class Candidates:
    queries: dict[str, str]
    passages: dict[str, Passage]  # distinct passages, first occurrence order
    run: pd.DataFrame  # RUN_COLUMNS; `line` holds the entry number (1-based) in the JSON list


def read_candidates(path: str | Path, tag: str = "candidates") -> Candidates:
    """Read a candidate JSON file.

    A passage id that appears under several queries must carry the same text each time;
    a different text, an empty query, a hit without id or text, or the same doc twice
    under one query raise InputError naming the entry (`path:ENTRY`, 1-based) and hit.
    Bytes that are not UTF-8 are named by line and byte offset; a file without any hit raises.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    try:
        entries = json.loads(decode_utf8(path, None, data, offset=0))
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, f"invalid JSON: {e.msg}") from None
    del data
    if not isinstance(entries, list):
        raise InputError(path, None, "expected a JSON list of {query, hits} objects")
    queries: dict[str, str] = {}
    passages: dict[str, Passage] = {}
    rows = []
    for number, entry in enumerate(entries, start=1):
        query, hits = (entry.get("query"), entry.get("hits")) if isinstance(entry, dict) else (None, None)
        if not isinstance(query, str) or not isinstance(hits, list):
            raise InputError(path, number, "entry needs a 'query' string and a 'hits' list")
        if not query.strip():
            raise InputError(path, number, "empty query text")
        seen: set[str] = set()
        for h, hit in enumerate(hits, start=1):
            qid, doc_id, text = str(hit.get("qid", "")), str(hit.get("docid", "")), hit.get("content")
            if not qid or not doc_id or not isinstance(text, str) or not text.strip():
                raise InputError(path, number, f"hit {h}: needs 'qid', 'docid' and non-empty 'content'")
            if queries.setdefault(qid, query) != query:
                raise InputError(path, number, f"query {qid!r} appears with two different texts")
            if doc_id in seen:
                raise InputError(path, number, f"hit {h}: doc {doc_id!r} listed twice for query {qid!r}")
            seen.add(doc_id)
            known = passages.setdefault(doc_id, Passage(doc_id, text))
            if known.text != text:
                raise InputError(path, number, f"hit {h}: doc {doc_id!r} has a different text than before")
            rows.append((qid, doc_id, int(hit.get("rank", h)), float(hit.get("score", -h)), tag, number))
    if not rows:
        raise InputError(path, None, "no candidates: the file holds no query with hits")
    run = pd.DataFrame(rows, columns=list(RUN_COLUMNS)).astype({"rank": np.int64, "line": np.int64})
    return Candidates(queries, passages, run)
