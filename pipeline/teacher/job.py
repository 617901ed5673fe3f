"""One teacher job, `TeacherJob` to files: inputs checked, the backend opened, the run, reply log and stats written.

    stats = rerank_with_teacher(TeacherJob(run=..., queries=..., corpus=..., out=..., model=...))
    total = dry_run(job)        # windows, tokens and cost, no model called (`describe` prints it)

Before any model starts, the settings are checked and the inputs read and checked
(`pipeline.contract.rerank_inputs.read_rerank_lists`: the run's lists go to `OUT.lists.tmp` beside
the output, memory one query, not the run; every shard checks the whole run, so a bad line fails
them all). The run then goes in this process (`run_to_files`: the driver, `pipeline.teacher.driver`,
writing the run query by query as queries finish, and the stats with provenance) or on Ray, where
each actor (`BlockRunner`) runs its blocks with the same `run_to_files`
(`pipeline.teacher.scale_out.run_on_ray`).

The dry run builds every window of the run from the first-stage order (later windows hold other
passages of the same lists, so it is close, not exact); its prompt tokens are counted with the
tokenizer when there is one, else estimated at 4 characters per token plus the chat format's few
tokens per message; its completion tokens are the reply budget (`max_tokens`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contract.corpus import CorpusStore
from pipeline.contract.reply_log import reply_log_path
from pipeline.contract.rerank_inputs import RunLists, read_rerank_lists
from pipeline.contract.run import RunWriter
from pipeline.contract.run import stats_path as run_stats_path
from pipeline.infra.errors import naming_the_file
from pipeline.infra.versions import TEACHER_PACKAGES, versions
from pipeline.teacher.backends import Backend
from pipeline.teacher.driver import Teacher
from pipeline.teacher.prompts import PromptTemplate, load_prompt
from pipeline.teacher.render import PromptRenderer, WindowPrompts
from pipeline.teacher.resume import prepare_log, settings_record
from pipeline.teacher.reuse import ReplayBackend, ReplyIndex, ReusingBackend, generation_settings, replay_settings
from pipeline.teacher.scale_out import parse_shard, run_on_ray, shard_filter
from pipeline.teacher.settings import Prices, TeacherJob, TeacherSettings
from pipeline.teacher.stats import run_stats
from pipeline.teacher.windows import sliding_windows

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4  # English text in the tokenizers of hosted models (OpenAI's rule of thumb)
TOKENS_PER_MESSAGE = 4  # role and separators of the chat format, per message
TOKENS_PER_REPLY = 3  # the reply's opening


@dataclass
class Inputs:
    """A job's settings and inputs, checked: what the run and the dry run start from."""

    settings: TeacherSettings
    template: PromptTemplate
    tokenizer: str | None
    prices: Prices | None
    lists: RunLists
    queries: dict[str, str]
    corpus: CorpusStore


@contextmanager
def checked_inputs(job: TeacherJob) -> Iterator[Inputs]:
    """The job's settings checked and its inputs read (the lists file is removed at the end)."""
    if job.replay is None and not job.model:
        raise ValueError(f"--model is required for backend {job.backend}")
    if job.constrained and job.backend != "vllm":
        raise ValueError("--constrained needs the vllm backend")
    if job.chat and job.ranking == "first":
        raise ValueError("--ranking first reads log-probabilities from /completions: pass --tokenizer")
    if job.max_cost is not None and job.engine == "ray":
        raise ValueError("--max-cost stops one process: run it with --engine local (or --shard)")
    prices = job.prices()  # checks the prices and the budget before anything starts
    tokenizer = job.tokenizer or (None if job.replay is not None or job.chat else job.model)
    replayed = replay_settings(job.replay) if job.replay is not None else None
    settings = job.settings((replayed or {}).get("model"))
    sliding_windows(job.depth, job.window, job.stride)  # validates the window settings early
    template = load_prompt(job.prompt)
    keep = shard_filter(*parse_shard(job.shard)) if job.shard else None
    job.out.parent.mkdir(parents=True, exist_ok=True)
    spill = job.out.with_name(job.out.name + ".lists.tmp")
    lists, queries, corpus = read_rerank_lists(job.run, job.queries, job.corpus, spill, job.max_queries, keep)
    with lists:
        yield Inputs(settings, template, tokenizer, prices, lists, queries, corpus)


def rerank_with_teacher(job: TeacherJob) -> dict[str, Any]:
    """Run the teacher job: OUT, its reply log and its stats; returns the stats. Raises
    `BudgetReached` when `max_cost` stopped it (the reply log keeps every window done)."""
    started = time.time()
    with checked_inputs(job) as inputs:
        log_path = job.log or reply_log_path(job.out)
        stats_path = job.stats or run_stats_path(job.out)
        record = settings_record(inputs.settings, inputs.template, inputs.tokenizer)
        provenance = {
            "run": str(job.run),
            "queries_file": str(job.queries),
            "corpus": str(job.corpus),
            "tag": job.tag,
            "shard": job.shard,
            "command": " ".join(sys.argv),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        }
        log.info(
            "teacher: %d queries, %d candidates, depth %d, window %d, stride %d, backend %s, engine %s, ranking %s",
            len(inputs.lists),
            inputs.lists.candidates,
            job.depth,
            job.window,
            job.stride,
            job.backend,
            job.engine,
            job.ranking,
        )
        if job.engine == "ray":
            ray_job = RayJob(
                job.backend,
                job.backend_options(),
                inputs.tokenizer,
                inputs.settings,
                inputs.template,
                job.corpus,
                inputs.queries,
                job.tag,
                provenance,
                list(job.reuse),
                inputs.prices,
            )
            actors, gpus, cpus = job.ray_actors, job.ray_gpus_per_actor, job.ray_cpus_per_actor
            stats = run_on_ray(
                BlockRunner,
                ray_job,
                inputs.lists,
                job.run,
                job.out,
                actors,
                job.block_size,
                job.ray_address,
                gpus,
                cpus,
            )
        else:
            moved = prepare_log(log_path, record)
            reuse = [*job.reuse, *([moved] if moved else [])]
            backend = open_teacher_backend(job.backend, job.backend_options(), reuse, record)
            try:
                teacher = Teacher(
                    backend,
                    PromptRenderer(inputs.tokenizer),
                    inputs.settings,
                    inputs.template,
                    inputs.corpus,
                    early=job.early,
                    prices=inputs.prices,
                    max_cost=job.max_cost,
                )
                stats = run_to_files(
                    teacher,
                    inputs.lists,
                    inputs.queries,
                    job.out,
                    log_path,
                    stats_path,
                    job.tag,
                    provenance,
                    job.progress,
                )
            finally:
                backend.close()
    cost = f", cost {stats['cost']['total']:.4f}" if "cost" in stats else ""
    log.info(
        "teacher run -> %s (%d windows, repair rate %.3f%s); stats -> %s",
        job.out,
        stats["windows"],
        stats["repair_rate"],
        cost,
        stats_path,
    )
    return stats


def open_model_backend(spec: str, **options: Any) -> Backend:
    """A model backend by its name (`vllm`, `openai`, `transformers`); `replay:LOG` is not a
    model: the teacher answers it from the log (`pipeline.teacher.reuse.ReplayBackend`)."""
    if spec == "vllm":
        from pipeline.teacher.backends.vllm_engine import VLLMBackend

        return VLLMBackend(**options)
    if spec == "openai":
        from pipeline.teacher.backends.openai_server import OpenAIBackend

        return OpenAIBackend(**options)
    if spec == "transformers":
        from pipeline.teacher.backends.hf_generate import TransformersBackend

        return TransformersBackend(**options)
    raise ValueError(f"unknown teacher backend {spec!r}: choose vllm, openai, transformers or replay:LOG")


def open_teacher_backend(
    spec: str, options: dict[str, Any], reuse: list[Path], record: dict[str, Any]
) -> ReusingBackend:
    """The backend of `--backend spec`, answering from the `reuse` logs first (those written by
    the same model under the same decoding: `record`'s generation settings). A model backend
    is opened on the first prompt no log answers; `replay:LOG` never opens one."""
    if spec.startswith("replay:"):
        backend: ReusingBackend = ReplayBackend(spec.removeprefix("replay:"))
    else:  # only vLLM streams partial replies (early submission): known before it is opened
        backend = ReusingBackend(ReplyIndex(), lambda: open_model_backend(spec, **options), spec, spec == "vllm")
    for path in reuse:
        backend.index.add(path, generation_settings(record))
    return backend


def run_to_files(
    teacher: Teacher,
    lists: dict[str, list[str]] | RunLists,
    queries: dict[str, str],
    out: Path,
    log_path: Path,
    stats_path: Path,
    tag: str,
    provenance: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Run the teacher and write the run (query by query, as queries finish, in run order), and
    the stats with provenance; returns the stats. `lists` may be a run on disk (RunLists)."""
    compute_started = time.perf_counter()
    with RunWriter(out, tag) as writer:
        items = lists.items() if isinstance(lists, dict) else lists
        teacher.run_queries(items, queries, log_path, writer.write, progress=progress)
    # the model is opened on the first new prompt, inside the run: its loading is not throughput
    load = teacher.backend.open_seconds
    seconds = time.perf_counter() - compute_started - load
    candidates = lists.candidates if isinstance(lists, RunLists) else sum(len(docs) for docs in lists.values())
    stats = run_stats(
        teacher.tally,
        queries=len(lists),
        candidates=candidates,
        seconds=seconds,
        load_seconds=load,
        prices=teacher.prices,
        provenance={
            **settings_record(teacher.settings, teacher.template, teacher.renderer.name),
            **provenance,
            "reply_log": str(log_path),
            "backend": teacher.backend.provenance(),
            "versions": versions(TEACHER_PACKAGES),
        },
    )
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    with naming_the_file(stats_path):
        stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    return stats


# --- Ray: what every actor runs ---------------------------------------------------------------


@dataclass
class RayJob:
    """What every actor needs to run blocks (sent to each actor once)."""

    backend: str
    backend_options: dict[str, Any]
    tokenizer: str | None
    settings: TeacherSettings
    template: PromptTemplate
    corpus: Path
    queries: dict[str, str]
    tag: str
    provenance: dict[str, Any]
    reuse: list[Path]  # earlier reply logs (--reuse)
    prices: Prices | None = None  # per million tokens: the cost in each block's stats


class BlockRunner:
    """A Ray Data actor: one backend, many blocks, each run as a single process runs its queries."""

    def __init__(self, job: RayJob):
        self.job = job
        self.renderer = PromptRenderer(job.tokenizer)
        self.record = settings_record(job.settings, job.template, job.tokenizer)
        self.backend = open_teacher_backend(job.backend, job.backend_options, job.reuse, self.record)
        self.corpus = CorpusStore(job.corpus)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        job, windows = self.job, []
        for out, lists_path in zip(batch["out"], batch["lists"], strict=True):
            out, block = Path(out), RunLists.of_file(lists_path)
            log_path = reply_log_path(out)
            moved = prepare_log(log_path, self.record)
            if moved is not None:
                self.backend.index.add(moved, generation_settings(self.record))
            teacher = Teacher(self.backend, self.renderer, job.settings, job.template, self.corpus, prices=job.prices)
            provenance = {**job.provenance, "block": out.name}
            stats = run_to_files(
                teacher, dict(block), job.queries, out, log_path, run_stats_path(out), job.tag, provenance, False
            )
            windows.append(stats["windows"])
            block.close()  # the block is done (its stats exist): its input is not needed again
        return {"out": list(batch["out"]), "windows": windows}


# --- the dry run ------------------------------------------------------------------------------


def dry_run(job: TeacherJob) -> dict[str, Any]:
    """Windows, prompt and completion tokens (and cost) of the job's run, without any model."""
    with checked_inputs(job) as inputs:
        prompts = WindowPrompts(PromptRenderer(inputs.tokenizer), inputs.settings, inputs.template)
        return estimate(inputs.lists, inputs.queries, inputs.corpus, prompts, inputs.prices)


def estimate(
    lists: Iterable[tuple[str, list[str]]],
    queries: dict[str, str],
    corpus: CorpusStore,
    prompts: WindowPrompts,
    prices: Prices | None = None,
) -> dict[str, Any]:
    """Windows, prompt and completion tokens (and cost) of a run, without any model."""
    s = prompts.settings
    counted = prompts.renderer.tokenizer is not None
    total = {"queries": 0, "windows": 0, "prompt_tokens": 0, "completion_tokens": 0, "windows_overflowing": 0}
    for qid, doc_ids in lists:
        total["queries"] += 1
        top = doc_ids[: s.depth]
        passages = {p.doc_id: (p.text, p.title) for p in corpus.passages(top)}
        for w in sliding_windows(len(top), s.window, s.stride):
            total["windows"] += 1
            window = [passages[d] for d in top[w.start : w.end]]
            request, info = prompts.request(f"{qid}\t{w.index}", qid, w.index, queries[qid], window, quiet=True)
            if request is None:
                total["windows_overflowing"] += 1
                continue
            total["prompt_tokens"] += info["prompt_tokens"] if counted else _estimated_tokens(request.messages)
            total["completion_tokens"] += request.max_tokens
    total["prompt_tokens_counted_by"] = prompts.renderer.name if counted else f"{CHARS_PER_TOKEN} characters per token"
    if prices is not None:
        total["cost"] = round(prices.cost(total["prompt_tokens"], total["completion_tokens"]), 4)
    return total


def _estimated_tokens(messages: tuple[dict[str, str], ...]) -> int:
    chars = sum(len(m["content"]) for m in messages)
    return -(-chars // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY


def describe(total: dict[str, Any], prices: Prices | None) -> str:
    """The dry run's report, a few lines."""
    lines = [
        f"dry run (no model called): {total['queries']} queries, {total['windows']} windows",
        f"prompt tokens: {total['prompt_tokens']:,} ({total['prompt_tokens_counted_by']}; passages in first-stage order)",
        f"completion tokens: at most {total['completion_tokens']:,} (the reply budget of every window)",
    ]
    if total["windows_overflowing"]:
        lines.append(f"windows whose prompt cannot fit the context: {total['windows_overflowing']}")
    if prices is not None:
        lines.append(
            f"cost at {prices.prompt:g} / {prices.completion:g} per million prompt / completion tokens: "
            f"at most {total['cost']:.4f}"
        )
    return "\n".join(lines)
