"""The data contract between stages, written down once: one module per artifact.

Every stage reads and writes these formats through these modules and nothing else, so stages
compose and a new first stage is just a new producer of a TREC run. Each module holds its
artifact's schema (column names as constants), its one ordering rule and its one streaming
reader and writer:

    corpus          the corpus store (`distillm ingest corpus`): passages.arrow, ids.npy, rows.npy,
                    store.json; passages read from TSV/JSONL files or `irds:<id>`
    queries         TSV `qid<TAB>text` (no header) or JSONL `{"qid": ..., "text": ...}`
    qrels           `qid iteration doc_id relevance`, whitespace-separated (relevance: int)
    run             TREC run `qid Q0 doc_id rank score tag`, one line per hit; its ordering rule
                    (rank, then higher score, then file order), read whole or query by query
    rerank_inputs   what every re-ranker reads: a run's ranked lists checked against the queries
                    and the corpus store (the one reference check), kept on disk
    candidates      rank_llm's candidate JSON: a run with passage text (queries + passages + run)
    reply_log       the teacher's reply log: one JSON record per window, its settings beside it
    dataset         the Rank-DistiLLM dataset: Parquet shards with fixed columns, metadata.json

and `lines` (text files read line by line, undecodable bytes named by file and line) and
`irds` (`irds:<id>` sources through ir_datasets) under them. In memory, runs and qrels are
pandas frames with exactly the columns of `run.RUN_COLUMNS` and `qrels.QRELS_COLUMNS`;
queries are `dict[qid, text]`; passages stream as `corpus.Passage` records.
"""
