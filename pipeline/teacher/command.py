"""`distillm rerank` with an LLM teacher: the command's arguments -> settings, inputs, one run.

    distillm rerank --run RUN --queries Q.tsv --corpus STORE --model M --out teacher.run

The flags are defined with the command (`pipeline.rerank`). This module checks them, reads
and checks the inputs before any model starts, and runs the teacher in this process
(`pipeline.teacher.run_files`) or on Ray (`pipeline.teacher.ray_engine`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.contract.corpus import CorpusStore
from pipeline.contract.rerank_inputs import RunLists, read_rerank_lists
from pipeline.teacher.backends.replay import replay_settings
from pipeline.teacher.cost import BudgetReached, Prices, describe, estimate
from pipeline.teacher.prompts import PromptTemplate, load_prompt
from pipeline.teacher.render import PromptRenderer
from pipeline.teacher.rerank import Teacher
from pipeline.teacher.resume import prepare_log
from pipeline.teacher.run_files import open_teacher_backend, run_to_files
from pipeline.teacher.settings import TeacherSettings, settings_record
from pipeline.teacher.shards import parse_shard, shard_filter
from pipeline.teacher.window_prompt import WindowPrompts
from pipeline.teacher.windows import sliding_windows

log = logging.getLogger(__name__)


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the model backend `--backend` names, from the command's flags."""
    if args.backend == "vllm":
        engine_args = {}
        for item in args.engine_arg:
            key, _, value = item.partition("=")
            try:
                engine_args[key] = json.loads(value)
            except json.JSONDecodeError:
                engine_args[key] = value
        return {
            "model": args.model,
            "max_model_len": args.max_model_len,
            "dtype": args.dtype,
            "engine_args": engine_args,
        }
    if args.backend == "transformers":
        return {
            "model": args.model,
            "batch_size": args.batch_size,
            "dtype": args.dtype,
            "continuous": args.continuous_batching,
        }
    if args.backend == "openai":
        # without a tokenizer there is no prompt text to send: the chat endpoint takes the messages
        chat = not args.tokenizer
        return {"model": args.model, "base_url": args.base_url, "concurrency": args.concurrency, "chat": chat}
    return {}


def prices(args: argparse.Namespace) -> Prices | None:
    """`--price-in` / `--price-out` (per million tokens; one given, the other is 0)."""
    if args.price_in is None and args.price_out is None:
        if args.max_cost is not None:
            raise ValueError("--max-cost needs the prices: --price-in and --price-out (per million tokens)")
        return None
    if min(args.price_in or 0.0, args.price_out or 0.0) < 0:
        raise ValueError("--price-in and --price-out cannot be negative")
    return Prices(args.price_in or 0.0, args.price_out or 0.0)


def main(args: argparse.Namespace) -> int:
    started = time.time()
    is_replay = args.backend.startswith("replay:")
    if not is_replay and not args.model:
        raise ValueError(f"--model is required for backend {args.backend}")
    if args.constrained and args.backend != "vllm":
        raise ValueError("--constrained needs the vllm backend")
    chat = args.backend == "openai" and not args.tokenizer
    if chat and args.ranking == "first":
        raise ValueError("--ranking first reads log-probabilities from /completions: pass --tokenizer")
    if args.max_cost is not None and args.engine == "ray":
        raise ValueError("--max-cost stops one process: run it with --engine local (or --shard)")
    prices(args)  # checks the prices and the budget before anything starts
    tokenizer = args.tokenizer or (None if is_replay or chat else args.model)
    replayed = replay_settings(Path(args.backend.removeprefix("replay:"))) if is_replay else None
    settings = TeacherSettings(
        model=args.model or (replayed or {}).get("model") or args.backend,
        prompt=args.prompt,
        depth=args.depth,
        window=args.window,
        stride=args.stride,
        max_words=args.max_words,
        max_model_len=args.max_model_len,
        max_new_tokens=args.max_new_tokens,
        constrained=args.constrained,
        ranking=args.ranking,
    )
    sliding_windows(args.depth, args.window, args.stride)  # validates the window settings early
    template = load_prompt(args.prompt)
    keep = shard_filter(*parse_shard(args.shard)) if args.shard else None
    # the run's lists go to a file beside the output (memory: one query, not the run); every
    # shard checks the whole run: a bad line fails them all, before any model starts
    args.out.parent.mkdir(parents=True, exist_ok=True)
    spill = args.out.with_name(args.out.name + ".lists.tmp")
    lists, queries, corpus = read_rerank_lists(args.run, args.queries, args.corpus, spill, args.max_queries, keep)
    try:
        if args.dry_run:
            prompts = WindowPrompts(PromptRenderer(tokenizer), settings, template)
            print(describe(estimate(lists, queries, corpus, prompts, prices(args)), prices(args)))
            return 0
        return _run(args, started, tokenizer, settings, template, lists, queries, corpus)
    except BudgetReached as e:
        print(f"distillm rerank: {e}", file=sys.stderr)
        return 3
    finally:
        lists.close()


def _run(
    args: argparse.Namespace,
    started: float,
    tokenizer: str | None,
    settings: TeacherSettings,
    template: PromptTemplate,
    lists: RunLists,
    queries: dict[str, str],
    corpus: CorpusStore,
) -> int:
    log_path = args.log or args.out.with_name(args.out.name + ".log.jsonl")
    stats_path = args.stats or args.out.with_name(args.out.name + ".stats.json")
    record = settings_record(settings, template, tokenizer)
    provenance = {
        "run": str(args.run),
        "queries_file": str(args.queries),
        "corpus": str(args.corpus),
        "tag": args.tag,
        "shard": args.shard,
        "command": " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
    }
    log.info(
        "teacher: %d queries, %d candidates, depth %d, window %d, stride %d, backend %s, engine %s, ranking %s",
        len(lists),
        lists.candidates,
        args.depth,
        args.window,
        args.stride,
        args.backend,
        args.engine,
        args.ranking,
    )
    if args.engine == "ray":
        from pipeline.teacher.ray_engine import RayJob, run_on_ray

        job = RayJob(
            args.backend,
            backend_options(args),
            tokenizer,
            settings,
            template,
            args.corpus,
            queries,
            args.tag,
            provenance,
            args.reuse,
            prices(args),
        )
        stats = run_on_ray(
            job,
            lists,
            args.run,
            args.out,
            args.ray_actors,
            args.block_size,
            args.ray_address,
            args.ray_gpus_per_actor,
            args.ray_cpus_per_actor,
        )
    else:
        moved = prepare_log(log_path, record)
        renderer = PromptRenderer(tokenizer)
        backend = open_teacher_backend(
            args.backend, backend_options(args), args.reuse + ([moved] if moved else []), record
        )
        try:
            teacher = Teacher(
                backend,
                renderer,
                settings,
                template,
                corpus,
                early=not args.no_early,
                prices=prices(args),
                max_cost=args.max_cost,
            )
            stats = run_to_files(
                teacher,
                lists,
                queries,
                args.out,
                log_path,
                stats_path,
                args.tag,
                provenance,
                progress=not args.no_progress,
            )
        finally:
            backend.close()
    cost = f", cost {stats['cost']['total']:.4f}" if "cost" in stats else ""
    log.info(
        "teacher run -> %s (%d windows, repair rate %.3f%s); stats -> %s",
        args.out,
        stats["windows"],
        stats["repair_rate"],
        cost,
        stats_path,
    )
    return 0
