"""`distillm train`: the compact cross-encoder trainer, stage 1 (InfoNCE) and stage 2 (distillation).

    # stage 1: pre-fine-tune on relevance labels, hard negatives from a first stage's top 200
    distillm train --stage infonce --run bm25.train.run --qrels train.qrels --queries train.tsv \\
        --corpus data/msmarco-corpus --model google/electra-base-discriminator --out models/stage1
    # stage 2: distil the teacher's top 100 (RankNet or ADR-MSE), starting from stage 1
    distillm train --stage distill --data data/dataset --corpus data/msmarco-corpus \\
        --init models/stage1/model --loss ranknet --out models/student

`train()` reads top to bottom in the order things run: settings, data, model, optimiser,
resumption, the loop (batch -> scores -> loss -> step, learning-rate schedule), evaluation,
checkpoints. The model is in `model.py`, the losses in `losses.py`, the lists in `data.py`.

One optimiser step sees `batch_size` queries with `list_size` passages each; `--accumulate N`
splits them into N micro-batches (the loss is the mean of theirs) to fit in memory. The
learning rate rises linearly over `warmup_steps`, then falls linearly to 0 at the last step.
Autocast to bf16 on a GPU, fp32 on a CPU. Everything random follows `--seed`: the same seed
gives the same loss curve (on a GPU up to the nondeterminism of its kernels).

Outputs under OUT (`--out`):
    model/                         the final cross-encoder in lightning-ir's mono layout (what --model / --init accept)
    checkpoints/step-NNNNNNNN/     model/, trainer.pt (optimiser, step, RNG states), config.json;
                                   every --save-every steps and at the end, the last --keep-checkpoints kept
    metrics.csv                    step, loss, lr, pairs_per_second: one row per step (dvc plots)
    eval.csv                       step, measure (with --eval-run: at step 0, every --eval-every, at the end)
    metrics.json                   the final numbers (dvc metrics)

`--resume` continues from the latest checkpoint: model, optimiser, step (the schedule and
the data position follow from it) and torch's RNG states, so a killed run that resumes
produces the same curve as one that never stopped. Without --resume an OUT that already
has checkpoints is refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pipeline.infra.crash_points import crash_point
from pipeline.infra.errors import InputError
from pipeline.infra.versions import STUDENT_PACKAGES, versions

log = logging.getLogger(__name__)

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


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up from 0 to lr over warmup_steps, then linear decay to 0 at total_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * max(0.0, (total_steps - step) / max(1, total_steps - cfg.warmup_steps))


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train a cross-encoder as `cfg` says; returns the final metrics (also in OUT/metrics.json)."""
    # torch and transformers load here, not at import: `distillm --help` stays fast
    import numpy as np
    import torch
    from tqdm import tqdm

    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.rerank_inputs import read_rerank_inputs
    from pipeline.student.checkpoint import cross_encoder_from, load_cross_encoder, read_provenance, save_cross_encoder
    from pipeline.student.data import RelevanceLists, TeacherLists, TrainList, epoch_rng
    from pipeline.student.losses import LOSSES

    cfg = resolve(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    latest = latest_checkpoint(out)
    if latest is not None and not cfg.resume:
        raise InputError(out, None, f"already has checkpoints ({latest.name}): pass --resume or use another --out")
    if latest is not None:
        check_resume_settings(latest, cfg)  # before anything slow
    rerank_sources = (cfg.rerank_run, cfg.queries, cfg.corpus)
    rerank_inputs = read_rerank_inputs(*rerank_sources) if cfg.rerank_run else None  # bad input fails now
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    torch.manual_seed(cfg.seed)

    # --- data: a list of candidates with targets per query, sampled per (seed, epoch, query)
    corpus = CorpusStore(cfg.corpus) if cfg.corpus else None
    if cfg.stage == "infonce":
        lists = RelevanceLists(
            cfg.run,
            cfg.qrels,
            cfg.queries,
            corpus,
            cfg.depth,
            cfg.list_size,
            cfg.relevance,
            cfg.max_queries,
            cfg.positives,
        )
        dataset = {"run": str(cfg.run), "qrels": cfg.qrels, "queries": cfg.queries, "corpus": str(cfg.corpus)}
    else:
        lists = TeacherLists(cfg.data, cfg.depth, cfg.list_size, cfg.sampling, cfg.max_queries, corpus, cfg.queries)
        dataset = {"path": str(cfg.data), "metadata": lists.metadata}
    batches_per_epoch = math.ceil(len(lists) / cfg.batch_size)
    total_steps = cfg.epochs * batches_per_epoch if cfg.steps is None else cfg.steps
    log.info(
        "%s: %d queries %s, %d steps of %d queries", cfg.stage, len(lists), lists.counts, total_steps, cfg.batch_size
    )

    def batch_at(step: int) -> list[TrainList]:
        """The lists of optimiser step `step`: a seeded shuffle per epoch, then consecutive slices."""
        epoch, position = divmod(step, batches_per_epoch)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(lists))
        picked = order[position * cfg.batch_size : (position + 1) * cfg.batch_size]
        return [lists.sample(int(i), epoch_rng(cfg.seed, epoch, int(i))) for i in picked]

    # --- model and loss: the latest checkpoint (resume), a checkpoint (--init: stage 1's, a lightning-ir
    # mono checkpoint such as webis/monoelectra-base) or --model: a base encoder (fresh head) or a checkpoint
    if latest is not None:
        model = load_cross_encoder(latest / "model")
    elif cfg.init is not None:
        model = load_cross_encoder(cfg.init)
    else:
        model, kind = cross_encoder_from(cfg.model, cfg.query_length, cfg.passage_length, cfg.seed)
        if kind != "encoder":
            log.info(
                "--model %s is a cross-encoder checkpoint: training continues from its head and lengths", cfg.model
            )
    model.to(device).train()
    loss_fn = LOSSES[cfg.loss]

    def scores_of(micro: list[TrainList]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Student scores [queries, longest list], targets and mask (False = padding of a short list)."""
        queries = [t.query for t in micro for _ in t.doc_ids]
        passages = lists.texts([d for t in micro for d in t.doc_ids])
        encoded = {k: v.to(device) for k, v in model.pairs(queries, passages).items()}
        with autocast:
            flat = model(**encoded)
        rows = torch.tensor([r for r, t in enumerate(micro) for _ in t.doc_ids], device=device)
        cols = torch.tensor([c for t in micro for c in range(len(t.doc_ids))], device=device)
        shape = (len(micro), max(len(t.doc_ids) for t in micro))
        scores = flat.new_zeros(shape).index_put((rows, cols), flat)
        targets = torch.zeros(shape, device=device).index_put(
            (rows, cols), torch.tensor([g for t in micro for g in t.targets], device=device)
        )
        mask = torch.zeros(shape, dtype=torch.bool, device=device).index_put(
            (rows, cols), torch.ones_like(rows, dtype=torch.bool)
        )
        return scores, targets, mask

    # --- optimiser: AdamW, fused (one kernel for all parameters: ~3x faster on CPU too);
    # the learning rate is set by hand each step (lr_at)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type in ("cuda", "cpu")
    )

    # --- resume: model (above), optimiser, step and RNG states; the data position follows from the step
    step = 0
    if latest is not None:
        step = load_trainer_state(latest, optimizer, device)
        log.info("resumed from %s at step %d of %d", latest, step, total_steps)
    metrics_log = CsvLog(out / "metrics.csv", ("step", "loss", "lr", "pairs_per_second"), keep_until=step)
    evaluator = Evaluator(cfg, corpus, bf16, keep_until=step) if cfg.eval_run else None
    provenance = {
        "stage": cfg.stage,
        "base_model": model.settings["base_model"],
        "init": None if cfg.init is None else {"path": str(cfg.init), "provenance": read_provenance(cfg.init)},
        "dataset": dataset,
        "counts": lists.counts,
        "total_steps": total_steps,
        "config": config_record(cfg),
        "versions": versions(STUDENT_PACKAGES),
        "command": " ".join(sys.argv),
    }

    # --- the loop
    if evaluator is not None and step == 0:
        evaluator(model, step)
    bar = tqdm(total=total_steps, initial=step, desc=f"train {cfg.stage}", unit=" steps", disable=cfg.no_progress)
    while step < total_steps:
        lr = lr_at(step, cfg, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        batch = batch_at(step)
        micro_batches = [m for m in np.array_split(np.arange(len(batch)), cfg.accumulate) if len(m)]
        loss_value = 0.0
        for micro in micro_batches:
            scores, targets, mask = scores_of([batch[i] for i in micro])
            loss = loss_fn(scores.float(), targets, mask) / len(micro_batches)
            loss.backward()
            loss_value += loss.item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        pairs = sum(len(t.doc_ids) for t in batch)
        pairs_per_second = pairs / (time.perf_counter() - started)
        metrics_log.write(step=step, loss=loss_value, lr=lr, pairs_per_second=pairs_per_second)
        crash_point("train-step")  # tests of resumption stop the run here (pipeline.infra.crash_points)
        bar.update()
        bar.set_postfix(loss=f"{loss_value:.4f}", pairs_s=f"{pairs_per_second:.0f}")
        # --- evaluation
        if evaluator is not None and (step == total_steps or (cfg.eval_every and step % cfg.eval_every == 0)):
            evaluator(model, step)
        # --- checkpoints
        if step % cfg.save_every == 0 or step == total_steps:
            save_checkpoint(out, step, model, optimizer, cfg, {**provenance, "step": step})
    bar.close()
    if total_steps == 0:  # --steps 0: the initial model is the result (and its checkpoint)
        save_checkpoint(out, 0, model, optimizer, cfg, {**provenance, "step": 0})
    save_cross_encoder(model, out / "model", {**provenance, "step": step})
    final = final_metrics(out, cfg, lists.counts, total_steps, evaluator)
    (out / "metrics.json").write_text(json.dumps(final, indent=2) + "\n")
    log.info("trained %d steps -> %s (loss %s)", step, out / "model", final["loss"])
    if rerank_inputs is not None:
        from pipeline.student.score import write_student_run

        write_student_run(
            model,
            out / "model",
            rerank_inputs,
            rerank_sources,
            Path(cfg.rerank_out),
            batch_size=cfg.eval_batch_size,
            depth=cfg.rerank_depth,
            bf16=bf16,
            progress=not cfg.no_progress,
        )
    return final


# --- checkpoints ----------------------------------------------------------------------------


def latest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint with the highest step (a folder is renamed into place when complete)."""
    done = [p for p in (out / "checkpoints").glob("step-*") if p.suffix != ".tmp" and (p / "trainer.pt").exists()]
    return max(done, key=lambda p: int(p.name.removeprefix("step-")), default=None)


def save_checkpoint(out: Path, step: int, model, optimizer, cfg: TrainConfig, provenance: dict[str, Any]) -> Path:
    """OUT/checkpoints/step-N/{model/, trainer.pt}, written aside and renamed; older ones pruned."""
    import torch

    from pipeline.student.checkpoint import save_cross_encoder

    path = out / "checkpoints" / f"step-{step:08d}"
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_cross_encoder(model, tmp / "model", provenance)
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, tmp / "trainer.pt")
    (tmp / "config.json").write_text(json.dumps(config_record(cfg), indent=2) + "\n")
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    finished = sorted((p for p in path.parent.glob("step-*") if p.suffix != ".tmp"), key=lambda p: p.name)
    for old in finished[: -cfg.keep_checkpoints]:
        shutil.rmtree(old)
    return path


def check_resume_settings(checkpoint: Path, cfg: TrainConfig) -> None:
    """A run resumes only under the settings it started with (except RESUME_MAY_CHANGE)."""
    before = json.loads((checkpoint / "config.json").read_text())
    now = config_record(cfg)
    changed = {k: (before.get(k), v) for k, v in now.items() if k not in RESUME_MAY_CHANGE and before.get(k) != v}
    if changed:
        raise InputError(checkpoint, None, f"cannot resume under other settings {changed}; use another --out")


def load_trainer_state(checkpoint: Path, optimizer, device) -> int:
    """Restore the optimiser and RNG states of a checkpoint; returns its step."""
    import torch

    state = torch.load(checkpoint / "trainer.pt", map_location=device, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return int(state["step"])


def config_record(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


# --- metrics and evaluation -----------------------------------------------------------------


class CsvLog:
    """A CSV written row by row (flushed), keeping only rows with step <= keep_until on resume."""

    def __init__(self, path: Path, columns: tuple[str, ...], keep_until: int):
        self.path, self.columns = path, columns
        kept = [r for r in read_csv(path) if int(r["step"]) <= keep_until] if keep_until else []
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(kept)

    def write(self, **row: Any) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: row[k] for k in self.columns})


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Evaluator:
    """Re-ranks --eval-run with the model in training and writes the measure to OUT/eval.csv."""

    def __init__(self, cfg: TrainConfig, corpus, bf16: bool, keep_until: int):
        from pipeline.contract.qrels import load_qrels
        from pipeline.contract.queries import load_queries
        from pipeline.contract.run import ranked_lists, read_trec_run

        self.cfg, self.corpus, self.bf16 = cfg, corpus, bf16
        self.lists = ranked_lists(read_trec_run(cfg.eval_run))
        self.queries = load_queries(cfg.queries)
        self.qrels = load_qrels(cfg.eval_qrels)
        path = Path(cfg.out) / "eval.csv"
        earlier = [r for r in read_csv(path) if keep_until and int(r["step"]) <= keep_until]
        self.values = {int(r["step"]): float(r[cfg.eval_measure]) for r in earlier}
        self.log = CsvLog(path, ("step", cfg.eval_measure), keep_until=keep_until)

    def __call__(self, model, step: int) -> float:
        from pipeline.evaluate import evaluate
        from pipeline.student.score import score_lists, student_run

        scores = score_lists(
            model, self.lists, self.queries, self.corpus, self.cfg.eval_batch_size, self.cfg.eval_depth, self.bf16
        )
        values, _ = evaluate(
            student_run(self.lists, scores, self.cfg.eval_depth, "eval"), self.qrels, [self.cfg.eval_measure]
        )
        self.values[step] = values[self.cfg.eval_measure]
        self.log.write(step=step, **{self.cfg.eval_measure: self.values[step]})
        log.info("step %d: %s %.4f", step, self.cfg.eval_measure, self.values[step])
        return self.values[step]


def final_metrics(out: Path, cfg: TrainConfig, counts: dict[str, int], total_steps: int, evaluator) -> dict[str, Any]:
    """metrics.json: the curve's end points from metrics.csv (whole run, across resumptions)."""
    rows = read_csv(out / "metrics.csv")
    losses = [float(r["loss"]) for r in rows]
    speeds = [float(r["pairs_per_second"]) for r in rows]
    final = {
        "stage": cfg.stage,
        "loss_function": cfg.loss,
        "steps": len(rows),
        "total_steps": total_steps,
        "loss": losses[-1] if losses else None,
        "loss_first": losses[0] if losses else None,
        "loss_last_10": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "pairs_per_second": sum(speeds) / len(speeds) if speeds else None,
        **{f"data_{k}": v for k, v in counts.items()},
    }
    if evaluator is not None and evaluator.values:
        first, last = min(evaluator.values), max(evaluator.values)
        final[f"eval_{cfg.eval_measure}"] = evaluator.values[last]
        final[f"eval_{cfg.eval_measure}_start"] = evaluator.values[first]
    return final


# --- command line ---------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train the cross-encoder student (stage 1 InfoNCE, stage 2 distillation)")
    for f in fields(TrainConfig):
        kwargs = dict(f.metadata)
        flag = "--" + f.name.replace("_", "-")
        if f.default is False:
            p.add_argument(flag, action="store_true", help=kwargs["help"])
            continue
        kwargs.setdefault("type", type(f.default) if f.default not in (None, MISSING) else str)
        if f.default not in (None, ""):
            kwargs["help"] += f" (default: {f.default})"
        p.add_argument(flag, default=f.default, **kwargs)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    final = train(cfg)
    print(json.dumps(final, indent=2))
    return 0
