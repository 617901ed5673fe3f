"""`distillm rerank`: re-rank any first-stage run with the LLM teacher or with the student.

    distillm rerank --run RUN --queries Q.tsv --corpus STORE --model M --out teacher.run
    distillm rerank --backend cross-encoder --model CKPT --run RUN ... --out student.run

Both re-rankers read the same inputs the same way (`pipeline.contract.rerank_inputs`) and write
a TREC run with a stats JSON beside it, so they share this command and its flags: the flags
become a `TeacherJob` (`pipeline.teacher.settings`, where their defaults are) for the teacher
(`pipeline.teacher.job.rerank_with_teacher`), or, with `--backend cross-encoder`, a
`StudentRerank` for the student (`pipeline.student.score.rerank_run_with_student`). Neither
runs, nor imports its libraries, before the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.commands import settings_from
from pipeline.teacher.settings import BACKENDS, TeacherJob

T = TeacherJob  # the flags' defaults


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
        default=T.backend,
        help=f"{BACKENDS} | cross-encoder (the student: --model CKPT)",
    )
    p.add_argument("--model", help="model folder or hub id (vllm, transformers); model name (openai)")
    p.add_argument(
        "--tokenizer",
        help="tokenizer for chat template and token counts (default: --model); openai: without it the "
        "window's messages go to /chat/completions (hosted models), with it the rendered prompt to /completions",
    )
    p.add_argument("--prompt", default=T.prompt, help="prompt template name in prompts/ or a .toml path")
    p.add_argument("--depth", type=int, default=T.depth)
    p.add_argument("--window", type=int, default=T.window)
    p.add_argument("--stride", type=int, default=T.stride)
    p.add_argument("--max-words", type=int, default=T.max_words, help="words per passage before adaptive shrinking")
    p.add_argument("--max-model-len", type=int, default=T.max_model_len)
    p.add_argument(
        "--max-new-tokens",
        type=int,
        help="default: tokens of a full permutation + 2; a reasoning model needs room for its thoughts too",
    )
    p.add_argument("--constrained", action="store_true", help="regex-constrained decoding (vllm)")
    p.add_argument(
        "--ranking",
        choices=["full", "first"],
        default=T.ranking,
        help="full: generate the permutation; first: FIRST, one token per window, the identifiers ordered by "
        "their log-probability as that token (a FIRST-trained model, single-token ids: --prompt rank_zephyr_alpha)",
    )
    p.add_argument(
        "--max-queries", type=int, default=T.max_queries, help="only the first N queries of the run (0: all)"
    )
    p.add_argument("--shard", help="I/N: only every N-th query from the I-th (0-based); merge with merge-shards")
    p.add_argument("--engine", choices=["local", "ray"], default=T.engine, help="ray: blocks of queries on Ray actors")
    p.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--ray-actors", type=int, default=T.ray_actors, help="ray: teacher actors (one engine each)")
    p.add_argument(
        "--ray-gpus-per-actor",
        type=float,
        default=T.ray_gpus_per_actor,
        help="ray: GPUs per actor (tensor parallel size)",
    )
    p.add_argument(
        "--ray-cpus-per-actor", type=float, default=T.ray_cpus_per_actor, help="ray: CPUs reserved per actor"
    )
    p.add_argument("--block-size", type=int, default=T.block_size, help="ray: queries per block")
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
    p.add_argument("--tag", default=T.tag, help="run tag")
    p.add_argument("--dtype", default=T.dtype, help="model dtype (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--batch-size", type=int, default=T.batch_size, help="transformers: prompts per generate call")
    p.add_argument(
        "--continuous-batching",
        action="store_true",
        help="transformers: continuous batching (paged KV cache, no padding) instead of padded generate batches",
    )
    p.add_argument("--base-url", default=T.base_url, help="openai: server URL")
    p.add_argument("--concurrency", type=int, default=T.concurrency, help="openai: parallel requests")
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.backend == "cross-encoder":
        from pipeline.student.score import rerank_run_with_student

        rerank_run_with_student(student_rerank(args))
        return 0
    from pipeline.teacher.job import describe, dry_run, rerank_with_teacher
    from pipeline.teacher.stats import BudgetReached

    job = teacher_job(args)
    try:
        if args.dry_run:
            print(describe(dry_run(job), job.prices()))
            return 0
        rerank_with_teacher(job)
    except BudgetReached as e:
        print(f"distillm rerank: {e}", file=sys.stderr)
        return 3
    return 0


def teacher_job(args: argparse.Namespace) -> TeacherJob:
    """The flags as the teacher's settings (`--restart-if-changed` is accepted and does nothing)."""
    return settings_from(
        TeacherJob,
        args,
        engine_args=tuple(args.engine_arg),
        early=not args.no_early,
        reuse=tuple(args.reuse),
        progress=not args.no_progress,
    )


def student_rerank(args: argparse.Namespace):
    """The flags the student uses, as its settings: the checkpoint, the files, depth, batch size, dtype, tag."""
    from pipeline.student.score import StudentRerank

    return settings_from(StudentRerank, args, progress=not args.no_progress)
