"""Teacher runs on Ray: blocks of queries on a pool of actors, one teacher engine each.

    distillm rerank ... --engine ray --ray-actors 8 --ray-gpus-per-actor 1 --block-size 100
    distillm rerank ... --engine ray --ray-address auto ...      # an existing Ray cluster

The queries are cut into blocks of `--block-size` in run order, each block's candidate lists
written to `OUT.blocks/block-NNNNN.lists` (so the driver holds no block in memory, and Ray
moves file names, not lists). Ray Data streams the blocks to an actor pool (`map_batches` with
a callable class): each actor builds one backend (for vLLM: one engine on its
`--ray-gpus-per-actor` GPUs; pass `--engine-arg tensor_parallel_size=N` to match) and runs
each block it receives with exactly the code of a single-process run, writing
`OUT.blocks/block-NNNNN.run` with its own reply log and stats (the `.lists` file is then removed).
Ray places actors, applies back-pressure and, when an actor dies, restarts it and retries
its block (up to 3 times); the retried block resumes from its own reply log, so nothing is
lost or done twice. A re-run skips blocks whose stats exist. At the end the blocks are
merged deterministically (`pipeline.teacher.shards.merge_runs`) into the same run, reply
log and stats a single process would write.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contract.corpus import CorpusStore
from pipeline.contract.rerank_inputs import RunLists, write_run_lists
from pipeline.teacher.cost import Prices
from pipeline.teacher.prompts import PromptTemplate
from pipeline.teacher.render import PromptRenderer
from pipeline.teacher.rerank import Teacher
from pipeline.teacher.resume import prepare_log
from pipeline.teacher.reuse import generation_settings
from pipeline.teacher.run_files import open_teacher_backend, run_to_files
from pipeline.teacher.settings import TeacherSettings, settings_record
from pipeline.teacher.shards import merge_runs

log = logging.getLogger(__name__)


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
    """A Ray Data actor: one backend, many blocks."""

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
            log_path = out.with_name(out.name + ".log.jsonl")
            moved = prepare_log(log_path, self.record)
            if moved is not None:
                self.backend.index.add(moved, generation_settings(self.record))
            teacher = Teacher(self.backend, self.renderer, job.settings, job.template, self.corpus, prices=job.prices)
            stats = run_to_files(
                teacher,
                dict(block),
                job.queries,
                out,
                log_path,
                out.with_name(out.name + ".stats.json"),
                job.tag,
                {**job.provenance, "block": out.name},
                progress=False,
            )
            windows.append(stats["windows"])
            block.close()  # the block is done (its stats exist): its input is not needed again
        return {"out": list(batch["out"]), "windows": windows}


def run_on_ray(
    job: RayJob,
    lists: RunLists,
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
    order: list[str] = []
    paths: list[Path] = []
    todo: list[dict[str, str]] = []  # each block's queries go to a file beside it, read by its actor
    items = iter(lists)
    while block := list(itertools.islice(items, block_size)):
        order += [qid for qid, _ in block]
        path = blocks_dir / f"block-{len(paths):05d}.run"
        paths.append(path)
        if not path.with_name(path.name + ".stats.json").exists():
            block_lists = write_run_lists(iter(block), path.with_name(path.name.removesuffix(".run") + ".lists"))
            todo.append({"out": str(path), "lists": str(block_lists.path)})
    log.info("ray: %d blocks of <= %d queries, %d to run, %d actors", len(paths), block_size, len(todo), actors)
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
    return merge_runs(order, first_stage, paths, out)
