"""`distillm train`'s settings, each declared once with its default and its help (the command's
flags are built from these: `pipeline.commands.train`), and their resolution per stage."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

STAGES = ("infonce", "distill")
STAGE_DEFAULTS = {  # the paper's settings per stage, used where an option is left at 0 / None
    "infonce": {"depth": 200, "list_size": 8, "loss": "infonce", "steps": 20_000},
    "distill": {"depth": 100, "list_size": 100, "loss": "ranknet", "steps": None},  # None: --epochs passes
}
# settings a resumed run may change; any other change would change the curve
RESUME_MAY_CHANGE = {
    "resume",
    "no_progress",
    "save_every",
    "keep_checkpoints",
    "threads",
    "device",
    "rerank_run",
    "rerank_out",
    "rerank_depth",
}


def option(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A setting: its default and its --help text, declared once (the CLI is built from these)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass
class TrainConfig:
    # what to train
    stage: str = option("distill", "infonce (stage 1: relevance labels) | distill (stage 2: teacher)", choices=STAGES)
    out: str = option(None, "output directory", required=True)
    model: str = option(
        "google/electra-base-discriminator",
        "base encoder (Hugging Face folder or hub id; a fresh head), or a cross-encoder checkpoint to continue",
    )
    init: str | None = option(
        None,
        "start from this cross-encoder checkpoint: stage 1's OUT/model, or lightning-ir's (webis/monoelectra-base)",
    )
    # data
    data: str | None = option(
        None,
        "stage 2: teacher rankings: a dataset DIR (data/*.parquet), one .parquet/.jsonl (ours, lightning-ir's, "
        "or the published qid/docno/score copies) or a TREC run (.run, .run.gz)",
    )
    run: str | None = option(None, "stage 1: first-stage TREC run (hard negatives)")
    qrels: str | None = option(None, "stage 1: qrels file or irds:<id>")
    queries: str | None = option(
        None, "stage 1, --eval-run and stage 2 data without a query column: queries file or irds:<id>"
    )
    corpus: str | None = option(None, "corpus store (stage 1; stage 2 without a text column; eval)")
    relevance: int = option(1, "stage 1: minimum relevance of a positive passage")
    positives: str = option(
        "qrels",
        "stage 1: positives from all judged passages, or only those in the run's top depth",
        choices=("qrels", "run"),
    )
    depth: int = option(0, "candidates per query to draw from (0: 200 for infonce, 100 for distill)")
    list_size: int = option(0, "passages per query in a step (0: 8 for infonce = 1 pos + 7 neg, 100 for distill)")
    sampling: str = option(
        "random", "stage 2: a random list_size of the top depth (kept in order), or the top", choices=("random", "top")
    )
    max_queries: int = option(0, "train on the first N queries only (0: all)")
    # model
    query_length: int = option(32, "query tokens (truncated before pairing)")
    passage_length: int = option(256, "passage tokens (truncated before pairing)")
    # loss and optimisation
    loss: str | None = option(
        None,
        "ranknet | adr-mse | infonce (default: infonce for stage 1, ranknet for stage 2)",
        choices=("ranknet", "adr-mse", "infonce"),
    )
    batch_size: int = option(32, "queries per optimiser step")
    accumulate: int = option(1, "split each step's queries into N micro-batches (less memory)")
    lr: float = option(1e-5, "peak learning rate (AdamW)")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_steps: int = option(0, "linear warm-up steps, then linear decay to 0")
    steps: int | None = option(
        None,
        "optimiser steps (default: 20000 for infonce, --epochs passes for distill; "
        "0: none, the output is the initial model)",
        type=int,
    )
    epochs: int = option(3, "stage 2: passes over the queries when --steps is not given")
    seed: int = option(0, "seed of the head, the sampling, the order and dropout")
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    precision: str = option(
        "auto", "auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32", choices=("auto", "bf16", "fp32")
    )
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    # checkpoints
    save_every: int = option(1000, "save a checkpoint every N steps (and at the end)")
    keep_checkpoints: int = option(2, "keep the last N checkpoints")
    resume: bool = option(False, "continue from the latest checkpoint in OUT")
    # evaluation (optional)
    eval_run: str | None = option(None, "re-rank this run with the student and evaluate it")
    eval_qrels: str | None = option(None, "qrels for --eval-run")
    eval_measure: str = option("nDCG@10", "ir-measures measure for --eval-run")
    eval_every: int = option(0, "evaluate every N steps (0: only at the start and the end)")
    eval_depth: int = option(100, "re-rank the top N of --eval-run")
    eval_batch_size: int = option(64, "pairs per forward pass in evaluation")
    # re-ranking with the final model in this process (a study's grid point: train, then re-rank)
    rerank_run: str | None = option(
        None, "after training, re-rank this run with the final model (needs --queries, --corpus)"
    )
    rerank_out: str | None = option(
        None, "the re-ranked run to write (+ .stats.json), as `distillm rerank --backend cross-encoder` writes it"
    )
    rerank_depth: int = option(100, "re-rank the top N of --rerank-run")
    no_progress: bool = option(False, "no progress bar")


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the stage-dependent defaults and check the combination of settings."""
    defaults = STAGE_DEFAULTS[cfg.stage]
    filled = {k: v for k, v in defaults.items() if k != "steps" and not getattr(cfg, k)}
    cfg = replace(cfg, **filled, steps=defaults["steps"] if cfg.steps is None else cfg.steps)
    if cfg.steps is not None and cfg.steps < 0:
        raise ValueError("--steps must be >= 0")
    needed = {"infonce": ("run", "qrels", "queries", "corpus"), "distill": ("data",)}[cfg.stage]
    absent = [f"--{n.replace('_', '-')}" for n in needed if getattr(cfg, n) is None]
    if cfg.eval_run is not None:
        absent += [f"--{n.replace('_', '-')}" for n in ("eval_qrels", "queries", "corpus") if getattr(cfg, n) is None]
    if (cfg.rerank_run is None) != (cfg.rerank_out is None):
        raise ValueError("--rerank-run and --rerank-out go together")
    if cfg.rerank_run is not None:
        absent += [f"--{n}" for n in ("queries", "corpus") if getattr(cfg, n) is None]
    if absent:
        raise ValueError(f"stage {cfg.stage} needs {', '.join(dict.fromkeys(absent))}")
    if cfg.batch_size < 1 or not 1 <= cfg.accumulate <= cfg.batch_size:
        raise ValueError("need batch_size >= 1 and 1 <= accumulate <= batch_size")
    return cfg


def config_record(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))
