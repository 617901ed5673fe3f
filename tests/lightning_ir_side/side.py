"""lightning-ir's side of the round trips, run by `.venv-lir/bin/python` (lightning-ir 0.0.6 needs
transformers<5, the pipeline 5.x), never imported by the tests themselves.

    .venv-lir/bin/python tests/lightning_ir_side/side.py JOBS.json RESULTS.json

JOBS.json is a list of jobs; RESULTS.json gets one result per job, in order:

    {"op": "run_dataset", "path": RUN, "depth": 100}   RunDataset(RUN, depth, targets="rank"): every sample
        -> {"dataset": ..., "samples": [{"query_id", "query", "doc_ids", "docs", "targets"}]}
    {"op": "read_run", "path": RUN}      the run as lightning-ir parses it, and the ir_datasets id its name gives
        -> {"dataset": ..., "dataset_id": ..., "query_ids": [...], "doc_ids": [...], "ranks": [...]}
    {"op": "write_mono", "backbone": DIR, "out": DIR, "query_length": 16, "doc_length": 32, "seed": 0}
        lightning-ir writes a mono cross-encoder (MonoConfig) on the backbone, its linear layer seeded
    {"op": "score", "model": DIR, "lists": [{"query": q, "docs": [...]}]}
        CrossEncoderModule(DIR) in eval mode, fp32 -> {"scores": [[...], ...]}

The test runs it with no network (proxies to a closed port, HF and IR_DATASETS offline).
"""

from __future__ import annotations

import json
import sys
import warnings


def run_dataset(job: dict) -> dict:
    from lightning_ir import RunDataset

    dataset = RunDataset(job["path"], depth=job["depth"], targets="rank")
    samples = []
    for index in range(len(dataset)):
        sample = dataset[index]
        samples.append(
            {
                "query_id": sample.query_id,
                "query": sample.query,
                "doc_ids": list(sample.doc_ids),
                "docs": list(sample.docs),
                "targets": sample.targets.view(-1).tolist(),
                "target_columns": int(sample.targets.shape[-1]) if sample.targets.dim() > 1 else 1,
            }
        )
    return {"dataset": dataset.dataset, "samples": samples}


def read_run(job: dict) -> dict:
    from lightning_ir import RunDataset

    dataset = RunDataset(job["path"])
    run = dataset._load_run()  # the parse alone: _setup would fetch the registered dataset's qrels
    return {
        "dataset": dataset.dataset,
        "dataset_id": dataset.dataset_id,
        "query_ids": run["query_id"].tolist(),
        "doc_ids": run["doc_id"].tolist(),
        "ranks": run["rank"].astype(int).tolist(),
    }


def write_mono(job: dict) -> dict:
    import torch
    from lightning_ir import CrossEncoderModule
    from lightning_ir.models import MonoConfig

    torch.manual_seed(job["seed"])
    config = MonoConfig(query_length=job["query_length"], doc_length=job["doc_length"])
    module = CrossEncoderModule(model_name_or_path=job["backbone"], config=config)
    with torch.no_grad():  # a head that discriminates (the fresh one has std 0.02), scores of order 1
        module.model.linear.weight.normal_(0, module.model.config.hidden_size**-0.5)
    module.model.save_pretrained(job["out"])
    module.tokenizer.save_pretrained(job["out"])
    return {"linear": module.model.linear.weight.view(-1).tolist()[:4]}


def score(job: dict) -> dict:
    from lightning_ir import CrossEncoderModule

    module = CrossEncoderModule(model_name_or_path=job["model"]).eval()
    return {"scores": [module.score(item["query"], item["docs"]).scores.tolist() for item in job["lists"]]}


OPS = {"run_dataset": run_dataset, "read_run": read_run, "write_mono": write_mono, "score": score}


def main(jobs_path: str, results_path: str) -> int:
    warnings.simplefilter("ignore")
    with open(jobs_path) as f:
        jobs = json.load(f)
    results = [OPS[job["op"]](job) for job in jobs]
    with open(results_path, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
