"""`distillm rerank`: re-rank any first-stage run with the LLM teacher or with the student.

    distillm rerank --run RUN --queries Q.tsv --corpus STORE --model M --out teacher.run
    distillm rerank --backend cross-encoder --model CKPT --run RUN ... --out student.run

Both re-rankers read the same inputs and write a TREC run with a stats JSON beside it, so
they share this command and its flags. `--backend cross-encoder` runs the student
(`pipeline.student.score`); every other backend runs the teacher (`pipeline.teacher.command`).
Neither is imported before the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("rerank", help="re-rank a run with the LLM teacher (sliding window) or the student")
    p.add_argument("--run", type=Path, required=True, help="first-stage TREC run (any)")
    p.add_argument("--queries", required=True, help="queries file or irds:<id>")
    p.add_argument("--corpus", type=Path, required=True, help="corpus store (distillm ingest corpus)")
    p.add_argument("--out", type=Path, required=True, help="output TREC run")
    p.add_argument("--log", type=Path, help="reply log (default: OUT.log.jsonl); an existing one is resumed")
    p.add_argument("--stats", type=Path, help="stats + provenance JSON (default: OUT.stats.json)")
    p.add_argument(
        "--backend",
        default="vllm",
        help="vllm | openai | transformers | replay:LOG | cross-encoder (the student: --model CKPT)",
    )
    p.add_argument("--model", help="model folder or hub id (vllm, transformers); model name (openai)")
    p.add_argument(
        "--tokenizer",
        help="tokenizer for chat template and token counts (default: --model); openai: without it the "
        "window's messages go to /chat/completions (hosted models), with it the rendered prompt to /completions",
    )
    p.add_argument("--prompt", default="rank_zephyr", help="prompt template name in prompts/ or a .toml path")
    p.add_argument("--depth", type=int, default=100)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--max-words", type=int, default=300, help="words per passage before adaptive shrinking")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument(
        "--max-new-tokens",
        type=int,
        help="default: tokens of a full permutation + 2; a reasoning model needs room for its thoughts too",
    )
    p.add_argument("--constrained", action="store_true", help="regex-constrained decoding (vllm)")
    p.add_argument(
        "--ranking",
        choices=["full", "first"],
        default="full",
        help="full: generate the permutation; first: FIRST, one token per window, the identifiers ordered by "
        "their log-probability as that token (a FIRST-trained model, single-token ids: --prompt rank_zephyr_alpha)",
    )
    p.add_argument("--max-queries", type=int, default=0, help="only the first N queries of the run (0: all)")
    p.add_argument("--shard", help="I/N: only every N-th query from the I-th (0-based); merge with merge-shards")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: blocks of queries on Ray actors")
    p.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--ray-actors", type=int, default=1, help="ray: teacher actors (one engine each)")
    p.add_argument("--ray-gpus-per-actor", type=float, default=0, help="ray: GPUs per actor (tensor parallel size)")
    p.add_argument("--ray-cpus-per-actor", type=float, default=1, help="ray: CPUs reserved per actor")
    p.add_argument("--block-size", type=int, default=100, help="ray: queries per block")
    p.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        metavar="LOG",
        help="earlier reply log whose replies answer identical prompts (same model and decoding); repeatable",
    )
    p.add_argument(
        "--restart-if-changed",
        action="store_true",
        help="accepted for older commands: a log of other settings or another run is always moved aside and reused",
    )
    p.add_argument("--tag", default="teacher", help="run tag")
    p.add_argument("--dtype", default="auto", help="model dtype (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--batch-size", type=int, default=8, help="transformers: prompts per generate call")
    p.add_argument(
        "--continuous-batching",
        action="store_true",
        help="transformers: continuous batching (paged KV cache, no padding) instead of padded generate batches",
    )
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="openai: server URL")
    p.add_argument("--concurrency", type=int, default=32, help="openai: parallel requests")
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="vllm: extra LLM() argument (JSON value), e.g. tensor_parallel_size=2",
    )
    p.add_argument(
        "--no-early",
        action="store_true",
        help="vllm: wait for each reply before submitting the next window (same output, for comparisons)",
    )
    p.add_argument("--price-in", type=float, help="cost per million prompt tokens (stats, progress bar)")
    p.add_argument("--price-out", type=float, help="cost per million completion tokens (reasoning included)")
    p.add_argument(
        "--max-cost",
        type=float,
        help="stop submitting windows once the run's cost reaches this (needs the prices); rerun to resume",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the run's windows, estimated prompt tokens and cost, and stop: no model is called",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.backend == "cross-encoder":
        from pipeline.student.score import main_cross_encoder

        return main_cross_encoder(args)
    from pipeline.teacher.command import main

    return main(args)
