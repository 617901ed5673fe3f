"""The student: a monoELECTRA-style cross-encoder distilled from the teacher's rankings.

    distillm train --stage infonce ...    stage 1: pre-fine-tune on relevance labels (InfoNCE)
    distillm train --stage distill ...    stage 2: distil the teacher's rankings (RankNet / ADR-MSE)
    distillm rerank --backend cross-encoder --model CKPT ...   re-rank a run with the student

`model` holds the cross-encoder, `checkpoint` its checkpoint folder, `losses` the loss
functions, `training_lists` the training lists (`teacher_rankings`: the teacher's rankings in any
published layout), `trainer` the whole training loop (`train_settings`: its settings), `score`
re-ranking.
"""
