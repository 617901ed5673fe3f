"""The Rank-DistiLLM dataset: export the teacher's rankings, validate them, write the card, publish on Zenodo.

    distillm export ...          teacher run + first-stage run -> DIR (Parquet shards, card, lightning-ir runs)
    distillm validate DIR        every query a full permutation; counts match metadata and card
    distillm card DIR            rewrite DIR/README.md from DIR/metadata.json
    distillm publish DIR ...     versioned archive + manifest -> a Zenodo deposition
    distillm fetch-dataset REC   download a published version, verify, unpack, validate

The dataset's schema, ordering and reader/writer are the data contract's (`pipeline.contract.dataset`).
"""
