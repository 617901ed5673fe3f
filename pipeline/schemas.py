"""The data contract between stages, written down once.

Every stage reads and writes these formats and nothing else, so stages compose and a
new first stage is just a new producer of a TREC run.

Files
-----
corpus store (directory, built by `distillm ingest corpus`)
    `passages.arrow`  Arrow IPC file, columns CORPUS_SCHEMA, memory-mapped when read;
    `ids.npy`         the doc ids as sorted fixed-width bytes (memory-mapped, binary search);
    `rows.npy`        int64, the row in passages.arrow of each sorted id;
    `store.json`      format version, passage count, source, whether titles exist.
queries      TSV `qid<TAB>text` (no header) or JSONL `{"qid": ..., "text": ...}`.
TREC run     `qid Q0 doc_id rank score tag`, whitespace-separated, one line per hit.
qrels        `qid iteration doc_id relevance`, whitespace-separated (relevance: int).
candidates   JSON list of `{"query": str, "hits": [{"qid", "docid", "content", "rank",
             "score"}]}` (rank_llm's retrieve_results format): a run with passage text.

In memory
---------
Runs and qrels are pandas frames with exactly the columns below; queries are
`dict[qid, text]`; passages stream as `Passage` records.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

CORPUS_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=True),
    ]
)

# `line` is the 1-based line of the hit in the file it was read from (-1 when made in
# memory); it lets every later check name the offending line.
RUN_COLUMNS = ("qid", "doc_id", "rank", "score", "tag", "line")
QRELS_COLUMNS = ("qid", "doc_id", "relevance")

CORPUS_STORE_FORMAT = "distillm-corpus/1"


@dataclass(frozen=True, slots=True)
class Passage:
    doc_id: str
    text: str
    title: str | None = None


@dataclass(frozen=True, slots=True)
class Query:
    qid: str
    text: str
