"""`distillm train`: the compact cross-encoder trainer, stage 1 (InfoNCE) and stage 2 (distillation).

    # stage 1: pre-fine-tune on relevance labels, hard negatives from a first stage's top 200
    distillm train --stage infonce --run bm25.train.run --qrels train.qrels --queries train.tsv \\
        --corpus data/msmarco-corpus --model google/electra-base-discriminator --out models/stage1
    # stage 2: distil the teacher's top 100 (RankNet or ADR-MSE), starting from stage 1
    distillm train --stage distill --data data/dataset --corpus data/msmarco-corpus \\
        --init models/stage1/model --loss ranknet --out models/student

`train()` reads top to bottom in the order things run: settings, data, model, optimiser,
resumption, the loop (batch -> scores -> loss -> step, learning-rate schedule), evaluation,
checkpoints. The settings are in `train_settings.py` (each flag's default and help, once), the
model in `model.py`, the losses in `losses.py`, the lists in `training_lists.py`.

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

import csv
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.infra.crash_points import crash_point
from pipeline.infra.errors import InputError
from pipeline.infra.versions import STUDENT_PACKAGES, versions
from pipeline.student.train_settings import RESUME_MAY_CHANGE, TrainConfig, config_record, resolve

log = logging.getLogger(__name__)


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
    from pipeline.contract.rerank_inputs import read_rerank_lists
    from pipeline.student.checkpoint import cross_encoder_from, load_cross_encoder, read_provenance, save_cross_encoder
    from pipeline.student.losses import LOSSES
    from pipeline.student.training_lists import RelevanceLists, TeacherLists, TrainList, epoch_rng

    cfg = resolve(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    latest = latest_checkpoint(out)
    if latest is not None and not cfg.resume:
        raise InputError(out, None, f"already has checkpoints ({latest.name}): pass --resume or use another --out")
    if latest is not None:
        check_resume_settings(latest, cfg)  # before anything slow
    rerank = rerank_job(cfg)
    if rerank is not None:  # bad input fails now, before any training
        spill = rerank.out.with_name(rerank.out.name + ".lists.tmp")
        read_rerank_lists(rerank.run, rerank.queries, rerank.corpus, spill)[0].close()
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
    if rerank is not None:
        from pipeline.student.score import rerank_run_with_student

        rerank_run_with_student(rerank, model=model, bf16=bf16)
    return final


def rerank_job(cfg: TrainConfig):
    """`--rerank-run`: re-rank it with the final model (OUT/model) as `distillm rerank --backend
    cross-encoder` would; None without it."""
    if cfg.rerank_run is None:
        return None
    from pipeline.student.score import StudentRerank

    return StudentRerank(
        model=str(Path(cfg.out) / "model"),
        run=Path(cfg.rerank_run),
        queries=cfg.queries,
        corpus=Path(cfg.corpus),
        out=Path(cfg.rerank_out),
        depth=cfg.rerank_depth,
        batch_size=cfg.eval_batch_size,
        progress=not cfg.no_progress,
    )


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
        from pipeline.evaluation.measures import evaluate
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
