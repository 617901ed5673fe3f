"""A study: students trained over a grid of teachers, losses, folds and seeds, aggregated with
their spread and per-query paired tests.

    distillm study prepare --spec study/params.yaml --corpus data/ingest/corpus --out study/data
    distillm study report --spec study/params.yaml --runs study/runs --out study/results

The spec (`study/params.yaml`, plain YAML) names the seeds, the folds (each holds one query
set out: its qrels and the first-stage run the students re-rank), the teachers (what each
is, its own runs per query set, optional further runs of the same teacher: its own noise),
the control teacher (the first stage's own order) and the primary loss. `prepare` writes
each fold's training inputs, `DATA/<fold>/`: `train.run` and `train.qrels` (the training
queries' first stage and judgments, for stage 1) and `teacher-<name>.run` (each teacher's
ranking of the training queries, checked against the corpus store). The runs folder
holds one re-ranked run per grid point, `RUNS/<teacher>-<loss>/<fold>-<seed>.run` (what
`study/dvc.yaml` writes).

What is computed, per configuration (a teacher and a loss):
- nDCG@10 of each seed on each held-out fold, and pooled over both folds' queries; the mean
  and the standard deviation across seeds (each seed's pooled mean is one replicate);
- paired two-sided t-tests over all held-out queries, each query's value being its mean over
  the seeds: against the first stage (BM25), against the control trained identically on the
  first stage's order, and a non-primary loss against the primary loss on the same teacher.
  p-values are Holm-adjusted within each family (all configurations against BM25; all against
  the control; the loss comparisons);
- the teacher's own nDCG@10 on the same queries (mean and spread over its runs when it has
  several).
"""
