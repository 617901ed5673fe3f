"""First stages: anything that produces a TREC run of candidates per query.

A first stage reads queries (and usually an index built from a corpus store) and writes
a TREC run (`qid Q0 doc_id rank score tag`, see `pipeline.contract.run`) whose tag names it.
That run is all the later stages see, so a run made elsewhere (`distillm ingest
candidates`, another toolkit) is a first stage too. Each engine is one module here with
`build_index` and `retrieve` (the commands `distillm index ENGINE` and `distillm retrieve ENGINE`:
`pipeline.commands.index`, `pipeline.commands.retrieve`).

- `bm25`: BM25 with Pyserini (Anserini on Lucene); `java` sets up its Java runtime.
- `colbert`: ColBERTv2 with colbert-ai's PLAID engine; `colbert_runtime` makes colbert-ai work
  beside vLLM (transformers 5, compiled extensions) and feeds it our store;
  `colbert_checkpoint` resolves checkpoints and builds the offline MiniLM one.
- `index_folder`: an index built aside and renamed into place, with its provenance.
- `retrieval`: what every first stage does around its engine (queries in, run and stats out).
"""
