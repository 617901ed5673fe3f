"""The student: a monoELECTRA-style cross-encoder distilled from the teacher's rankings.

    distillm train --stage infonce ...    stage 1: pre-fine-tune on relevance labels (InfoNCE)
    distillm train --stage distill ...    stage 2: distil the teacher's rankings (RankNet / ADR-MSE)
    distillm rerank --backend cross-encoder --model CKPT ...   re-rank a run with the student

`model` holds the cross-encoder and its checkpoint folder, `losses` the loss functions,
`data` the training lists, `train` the whole training loop, `score` re-ranking.
"""
