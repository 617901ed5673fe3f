"""Benchmark the ELECTRA-base-shaped student on a GPU: pairs/s of a training step and of inference.

    python bench/student_gpu.py                            # a GPU machine: measures, checks the goal
    .venv/bin/python bench/student_gpu.py --device cpu --steps 2   # smoke mode: runs every check, no numbers

The model is the trainer's cross-encoder (`pipeline.student.model.CrossEncoder`) on an
ELECTRA encoder with random weights built from a config of google/electra-base-discriminator's
shape (12 layers, hidden 768, 12 heads, FFN 3072, vocab 30522): shapes decide the cost, the
weights do not (ENVIRONMENT.md), and no download is needed.

- training step: 32 queries x 8 pairs of 288 tokens (the paper's stage-1 step, about the
  32 + 256 token maximum): forward under bf16 autocast, RankNet over [32, 8], backward, fused
  AdamW: what `train.py` does per step with --accumulate 1. Goal on an H100: >= 1,500 pairs/s
  (ENVIRONMENT.md measured ~1,650 for a bare step of this shape).
- inference: 288-token pairs in batches of --infer-batch under inference_mode + bf16 autocast
  (ENVIRONMENT.md: ~7,300 pairs/s on an H100).

Self-checks on any device: scores and loss finite; every parameter gets a finite gradient; the
step changes the weights; bf16-autocast scores agree with fp32 scores (Pearson r >= 0.99). On
CUDA the training pairs/s is compared with --goal and the exit status is 1 below it; the result
goes to bench/results/student_gpu.json.

Smoke mode (`--device cpu`): shapes shrink to 2 layers and 2 queries x 8 pairs x 64 tokens
(unless given), nothing is written, and the numbers mean nothing: it proves the script runs.
This session had no GPU, so the script has only run in smoke mode so far.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a bare checkout on a GPU machine

from pipeline.student.losses import ranknet_loss  # noqa: E402
from pipeline.student.model import CHECKPOINT_FORMAT, CrossEncoder  # noqa: E402

FULL = {"layers": 12, "queries": 32, "list_size": 8, "seq_len": 288, "steps": 20, "infer_batch": 256}
SMOKE = {"layers": 2, "queries": 2, "list_size": 8, "seq_len": 64, "steps": 2, "infer_batch": 16}


def build_model(layers: int, device: torch.device) -> CrossEncoder:
    """google/electra-base-discriminator's shape with random weights, as the student's cross-encoder."""
    from transformers import ElectraConfig, ElectraModel

    config = ElectraConfig(
        vocab_size=30522,
        embedding_size=768,
        hidden_size=768,
        num_hidden_layers=layers,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    settings = {"format": CHECKPOINT_FORMAT, "base_model": "random ElectraConfig", "query_length": 32}
    settings["passage_length"] = 256
    with device:
        model = CrossEncoder(ElectraModel(config), None, settings)
        torch.nn.init.normal_(model.head.weight, std=config.initializer_range)
    return model


def random_pairs(n: int, seq_len: int, device: torch.device, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """n pairs of exactly seq_len tokens: [CLS] 32 query tokens [SEP] passage [SEP]."""
    ids = torch.randint(1000, 30522, (n, seq_len), generator=generator)
    query_end = min(33, seq_len // 2)
    ids[:, 0], ids[:, query_end], ids[:, -1] = 101, 102, 102
    types = torch.zeros_like(ids)
    types[:, query_end + 1 :] = 1
    return {
        k: v.to(device)
        for k, v in {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": types}.items()
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, help="encoder layers (12; smoke 2)")
    parser.add_argument("--queries", type=int, help="queries per training step (32; smoke 2)")
    parser.add_argument("--list-size", type=int, help="pairs per query (8)")
    parser.add_argument("--seq-len", type=int, help="tokens per pair (288; smoke 64)")
    parser.add_argument("--steps", type=int, help="timed training steps and inference batches (20; smoke 2)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernel selection, allocator)")
    parser.add_argument("--infer-batch", type=int, help="pairs per inference batch (256; smoke 16)")
    parser.add_argument("--goal", type=float, default=1500.0, help="training pairs/s to reach on CUDA")
    parser.add_argument("--out", type=Path, help="result JSON (default on CUDA: bench/results/student_gpu.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    smoke = device.type == "cpu"
    for key, value in (SMOKE if smoke else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    generator = torch.Generator().manual_seed(0)
    model = build_model(args.layers, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    n = args.queries * args.list_size
    targets = torch.arange(args.list_size, 0, -1, dtype=torch.float32, device=device).repeat(args.queries, 1)
    train_batch = random_pairs(n, args.seq_len, device, generator)
    infer_batch = random_pairs(args.infer_batch, args.seq_len, device, generator)
    checks: dict[str, bool] = {}

    def train_step() -> torch.Tensor:
        with autocast:
            scores = model(**train_batch).view(args.queries, args.list_size)
        loss = ranknet_loss(scores.float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    # --- checks: one step by hand
    model.train()
    before = [p.detach().clone() for p in model.parameters()]
    with autocast:
        scores = model(**train_batch).view(args.queries, args.list_size)
    loss = ranknet_loss(scores.float(), targets)
    loss.backward()
    checks["scores_finite"] = bool(torch.isfinite(scores).all())
    checks["loss_finite"] = bool(torch.isfinite(loss))
    checks["every_parameter_has_a_finite_gradient"] = all(
        p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters()
    )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    checks["step_changes_the_weights"] = all(
        not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)
    )
    model.eval()
    with torch.inference_mode():
        fp32 = model(**infer_batch).float()
        with autocast:
            bf16 = model(**infer_batch).float()
    pearson = float(torch.corrcoef(torch.stack([fp32, bf16]))[0, 1])
    checks["bf16_scores_agree_with_fp32"] = pearson >= 0.99

    # --- training step
    model.train()
    for _ in range(args.warmup):
        train_step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step()
    synchronize(device)
    train_seconds = time.perf_counter() - started
    checks["training_loss_finite"] = bool(torch.isfinite(loss))
    train_pps = args.steps * n / train_seconds

    # --- inference
    model.eval()
    with torch.inference_mode(), autocast:
        for _ in range(args.warmup):
            model(**infer_batch)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(args.steps):
            model(**infer_batch)
        synchronize(device)
    infer_seconds = time.perf_counter() - started
    infer_pps = args.steps * args.infer_batch / infer_seconds

    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"{'SMOKE (numbers mean nothing) ' if smoke else ''}{name}: {args.layers} layers, {args.seq_len} tokens")
    print(f"  train     {args.queries} x {args.list_size} pairs/step  {train_pps:>9.1f} pairs/s")
    print(f"  inference {args.infer_batch} pairs/batch     {infer_pps:>9.1f} pairs/s")
    print(f"  bf16 vs fp32 scores: Pearson r = {pearson:.5f}")
    for check, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    goal_met = None if smoke else train_pps >= args.goal
    if goal_met is not None:
        print(f"  {'ok  ' if goal_met else 'FAIL'} train >= {args.goal:,.0f} pairs/s")
    out = args.out or (None if smoke else REPO / "bench" / "results" / "student_gpu.json")
    if out is not None:
        record = {
            "device": name,
            "smoke": smoke,
            "shape": {k: getattr(args, k) for k in FULL},
            "train_pairs_per_second": round(train_pps, 1),
            "infer_pairs_per_second": round(infer_pps, 1),
            "goal_train_pairs_per_second": args.goal,
            "goal_met": goal_met,
            "pearson_bf16_fp32": round(pearson, 5),
            "checks": checks,
            "max_memory_gib": None if memory is None else round(memory, 2),
            "torch": torch.__version__,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"-> {out}")
    return 0 if all(checks.values()) and goal_met is not False else 1


if __name__ == "__main__":
    sys.exit(main())
