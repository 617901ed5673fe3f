"""Teacher runs on Ray: blocks of queries on a pool of actors, one teacher engine each.

    distillm rerank ... --engine ray --ray-actors 8 --ray-gpus-per-actor 1 --block-size 100
    distillm rerank ... --engine ray --ray-address auto ...      # an existing Ray cluster

The queries are cut into blocks of `--block-size` in run order. Ray Data streams the blocks
to an actor pool (`map_batches` with a callable class): each actor builds one backend (for
vLLM: one engine on its `--ray-gpus-per-actor` GPUs; pass `--engine-arg
tensor_parallel_size=N` to match) and runs each block it receives with exactly the code of a
single-process run, writing `OUT.blocks/block-NNNNN.run` with its own reply log and stats.
Ray places actors, applies back-pressure and, when an actor dies, restarts it and retries
its block (up to 3 times); the retried block resumes from its own reply log, so nothing is
lost or done twice. A re-run skips blocks whose stats exist. At the end the blocks are
merged deterministically (`pipeline.teacher.shards.merge_runs`) into the same run, reply
log and stats a single process would write.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.io.corpus import CorpusStore
from pipeline.teacher.backends import open_backend
from pipeline.teacher.prompts import PromptTemplate
from pipeline.teacher.shards import merge_runs

log = logging.getLogger(__name__)


@dataclass
class RayJob:
    """What every actor needs to run blocks (sent to each actor once)."""

    backend: str
    backend_options: dict[str, Any]
    tokenizer: str | None
    settings: Any  # TeacherSettings
    template: PromptTemplate
    corpus: Path
    queries: dict[str, str]
    tag: str
    provenance: dict[str, Any]
    restart_if_changed: bool


class BlockRunner:
    """A Ray Data actor: one backend, many blocks."""

    def __init__(self, job: RayJob):
        from pipeline.teacher.rerank import PromptRenderer

        self.job = job
        self.renderer = PromptRenderer(job.tokenizer)
        self.backend = open_backend(job.backend, **job.backend_options)
        self.corpus = CorpusStore(job.corpus)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from pipeline.teacher.rerank import Teacher, check_log_settings, run_to_files, settings_record

        job, windows = self.job, []
        for out, lists_json in zip(batch["out"], batch["lists"], strict=True):
            out = Path(out)
            log_path = out.with_name(out.name + ".log.jsonl")
            check_log_settings(
                log_path, settings_record(job.settings, job.template, job.tokenizer), job.restart_if_changed
            )
            teacher = Teacher(self.backend, self.renderer, job.settings, job.template, self.corpus)
            stats = run_to_files(
                teacher,
                json.loads(lists_json),
                job.queries,
                out,
                log_path,
                out.with_name(out.name + ".stats.json"),
                job.tag,
                {**job.provenance, "block": out.name},
                progress=False,
            )
            windows.append(stats["windows"])
        return {"out": list(batch["out"]), "windows": windows}


def run_on_ray(
    job: RayJob,
    lists: dict[str, list[str]],
    first_stage: Path,
    out: Path,
    actors: int,
    block_size: int,
    address: str | None = None,
    gpus_per_actor: float = 0,
    cpus_per_actor: float = 1,
) -> dict[str, Any]:
    """Run the teacher over `lists` on Ray and merge the blocks into out (+ log, stats)."""
    import ray

    blocks_dir = out.with_name(out.name + ".blocks")
    blocks_dir.mkdir(parents=True, exist_ok=True)
    items = list(lists.items())
    blocks = [dict(items[i : i + block_size]) for i in range(0, len(items), block_size)]
    paths = [blocks_dir / f"block-{b:05d}.run" for b in range(len(blocks))]
    todo = [
        {"out": str(path), "lists": json.dumps(block)}
        for path, block in zip(paths, blocks, strict=True)
        if not path.with_name(path.name + ".stats.json").exists()
    ]
    log.info("ray: %d blocks of <= %d queries, %d to run, %d actors", len(blocks), block_size, len(todo), actors)
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        done = (
            ray.data.from_items(todo, override_num_blocks=len(todo))
            .map_batches(
                BlockRunner,
                fn_constructor_args=(job,),
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=gpus_per_actor or None,
                num_cpus=cpus_per_actor,
                max_restarts=-1,
                max_task_retries=3,
            )
            .take_all()
        )
        log.info("ray: %d blocks done, %d windows", len(done), sum(r["windows"] for r in done))
    return merge_runs(list(lists), first_stage, paths, out)
