"""Scale-out: a teacher run cut into shards (many machines) or blocks (Ray actors), and the
deterministic merge that makes them one run again.

    distillm rerank ... --shard 0/4 --out shards/teacher.0.run     # on 4 machines, 0/4 .. 3/4
    distillm merge-shards --run first_stage.run --out teacher.run shards/teacher.*.run
    distillm rerank ... --engine ray --ray-actors 8 --ray-gpus-per-actor 1 --block-size 100
    distillm rerank ... --engine ray --ray-address auto ...      # an existing Ray cluster

Shards: queries are dealt round-robin in first-stage run order (query p goes to shard p mod N),
so shards are balanced and each is an ordinary teacher run with its own reply log and stats
(and resumes on its own).

Ray: the queries are cut into blocks of `--block-size` in run order, each block's candidate lists
written to `OUT.blocks/block-NNNNN.lists` (so the driver holds no block in memory, and Ray moves
file names, not lists). Ray Data streams the blocks to an actor pool (`map_batches` with a
callable class, `pipeline.teacher.job.BlockRunner`): each actor builds one backend (for vLLM: one
engine on its `--ray-gpus-per-actor` GPUs; pass `--engine-arg tensor_parallel_size=N` to match)
and runs each block it receives with exactly the code of a single-process run, writing
`OUT.blocks/block-NNNNN.run` with its own reply log and stats (the `.lists` file is then removed).
Ray places actors, applies back-pressure and, when an actor dies, restarts it and retries its
block (up to 3 times); the retried block resumes from its own reply log, so nothing is lost or
done twice. A re-run skips blocks whose stats exist.

The merge (`merge_runs`) checks that the shards (or blocks) were made with the same settings and
run tag, cover every query of the first-stage run exactly once, and each come with their stats
and a whole reply log (every window the stats count), and writes one run, one reply log and one
stats file, identical to a single-process run's (the log grouped by query, in run order).
"""

from __future__ import annotations

import itertools
import json
import logging
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.contract.reply_log import reply_log_path, reply_log_records
from pipeline.contract.rerank_inputs import RunLists, write_run_lists
from pipeline.contract.run import NotGrouped, RunWriter, iter_run, ranked_lists, read_query, read_trec_run
from pipeline.contract.run import stats_path as run_stats_path
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)

# provenance fields that legitimately differ between the shards of one run
_PER_SHARD = {"command", "started", "reply_log", "shard", "block", "backend"}
_SUMMED = (
    "windows",
    "windows_repaired",
    "ids_missing",
    "ids_repeated",
    "ids_out_of_range",
    "windows_with_shrunk_passages",
    "prompt_tokens",
    "completion_tokens",
    "queries",
    "candidates",
)
# absent from older stats
_SUMMED_IF_PRESENT = ("windows_submitted_early", "early_windows_redone", "reasoning_tokens", "context_length_retries")
_COST_SUMMED = ("prompt_tokens", "completion_tokens", "total")


def parse_shard(spec: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N."""
    try:
        index, count = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects I/N, e.g. 0/4, got {spec!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {spec}: need 0 <= I < N")
    return index, count


def select_shard(lists: dict[str, list[str]], index: int, count: int) -> dict[str, list[str]]:
    """The queries of shard `index` of `count`: every count-th query in run order."""
    keep = shard_filter(index, count)
    return {qid: docs for p, (qid, docs) in enumerate(lists.items()) if keep(p, qid)}


def shard_filter(index: int, count: int) -> Callable[[int, str], bool]:
    """keep(position in run order, qid): whether a query belongs to shard `index` of `count`."""
    return lambda position, _qid: position % count == index


def merge_shards(first_stage: Path, shard_runs: list[Path], out: Path) -> dict[str, Any]:
    """Merge shard runs (with their `.log.jsonl` and `.stats.json`) covering every query of
    the first-stage run into out, out.log.jsonl and out.stats.json."""
    try:
        order = [query.qid for query in iter_run(first_stage)]
    except NotGrouped:
        order = list(ranked_lists(read_trec_run(first_stage)))
    return merge_runs(order, first_stage, shard_runs, out)


def merge_runs(order: list[str], first_stage: Path, shard_runs: list[Path], out: Path) -> dict[str, Any]:
    """Merge teacher runs of disjoint query sets that together hold exactly the queries of
    `order` (queries in that order in the output).

    Each shard needs its stats and its whole reply log: a log that is missing, or holds
    fewer (or other) windows than the shard's stats count, is refused, naming the shard.
    Memory: where each query's ranking and each window's record are in the shards' files
    (about 100 bytes a query and 16 a window), never the rankings or records themselves.
    """
    rankings = _ShardRankings()
    tags: dict[str, Path] = {}
    stats_list, windows = [], []
    for shard, run_path in enumerate(shard_runs):
        shard_qids = rankings.add(shard, run_path, tags)  # a shard of more shards than queries is empty
        stats_path = run_stats_path(run_path)
        stats = _read_stats(stats_path)
        stats_list.append((stats_path, stats))
        log_path = reply_log_path(run_path)
        if not log_path.exists():
            raise InputError(log_path, None, f"reply log of shard {run_path} not found")
        logged = _LoggedWindows(log_path, rankings.code, shard_qids, run_path)
        if logged.count != stats.get("windows"):
            raise InputError(
                log_path,
                None,
                f"holds {logged.count} windows but shard {run_path} counts {stats.get('windows')} in "
                f"{stats_path.name}: the log is truncated or from another run; re-run the shard to complete it",
            )
        windows.append(logged)
    if missing := [q for q in order if q not in rankings.shard_of]:
        raise InputError(first_stage, None, f"{len(missing)} queries are in no shard, e.g. {missing[:3]}")
    if extra := rankings.shard_of.keys() - set(order):
        raise InputError(first_stage, None, f"shards hold queries not in this run, e.g. {sorted(extra)[:3]}")
    settings = [{k: v for k, v in s["provenance"].items() if k not in _PER_SHARD} for _, s in stats_list]
    for (path, _), other in zip(stats_list[1:], settings[1:], strict=True):
        if other != settings[0]:
            diff = {
                k: (settings[0].get(k), other.get(k))
                for k in settings[0].keys() | other.keys()
                if settings[0].get(k) != other.get(k)
            }
            raise InputError(path, None, f"shard made with other settings than {stats_list[0][0]}: {diff}")
    if len(tags) > 1:
        (tag, first), (other_tag, other) = list(tags.items())[:2]
        raise InputError(other, None, f"run tag {other_tag!r} differs from {tag!r} of {first}: not shards of one run")
    with RunWriter(out, next(iter(tags))) as writer:
        for qid in order:
            writer.write(qid, rankings.ranking(qid, shard_runs))
    out_log = reply_log_path(out)
    tmp = out_log.with_name(out_log.name + ".tmp")
    opened: list[_LoggedWindows] = []  # at most 32 shard logs open at once (Ray writes a log per block)
    with open(tmp, "wb") as f:
        for qid in order:  # each query's windows in window order, as their records were written
            logged = windows[rankings.shard_of[qid]]
            f.writelines(logged.lines(rankings.code[qid]))
            if logged not in opened:
                opened.append(logged)
                if len(opened) > 32:
                    opened.pop(0).close()
    for logged in opened:
        logged.close()
    tmp.replace(out_log)
    merged: dict[str, Any] = {key: sum(s[key] for _, s in stats_list) for key in _SUMMED}
    merged |= {key: sum(s.get(key, 0) for _, s in stats_list) for key in _SUMMED_IF_PRESENT}
    names = dict.fromkeys(k for _, s in stats_list for k in s["repairs"])  # older stats lack newer repairs
    merged["repairs"] = {k: sum(s["repairs"].get(k, 0) for _, s in stats_list) for k in names}
    merged["repair_rate"] = merged["windows_repaired"] / merged["windows"] if merged["windows"] else 0.0
    if all("cost" in s for _, s in stats_list):  # each shard's tokens and cost, summed
        costs = [s["cost"] for _, s in stats_list]
        merged["cost"] = {**costs[0], **{k: sum(c[k] for c in costs) for k in _COST_SUMMED}}
        merged["cost"]["total"] = round(merged["cost"]["total"], 6)
    merged["seconds"] = max(s["seconds"] for _, s in stats_list)  # wall time of parallel shards
    merged["provenance"] = {
        **stats_list[0][1]["provenance"],
        "reply_log": str(out_log),
        "run": str(first_stage),
        "shards": [
            {
                "run": str(p.with_name(p.name.removesuffix(".stats.json"))),
                "backend": s["provenance"]["backend"],
                "command": s["provenance"].get("command"),
            }
            for p, s in stats_list
        ],
    }
    merged["provenance"].pop("shard", None)
    merged["provenance"].pop("block", None)
    run_stats_path(out).write_text(json.dumps(merged, indent=2) + "\n")
    return merged


class _ShardRankings:
    """Which shard holds each query, and where its ranking is in that shard's run file."""

    def __init__(self) -> None:
        self.shard_of: dict[str, int] = {}
        self.code: dict[str, int] = {}  # qid -> a number (the log index's key)
        self.where: dict[str, tuple[int, int, int] | list[str]] = {}  # bytes and first line, or the ranking

    def add(self, shard: int, run_path: Path, tags: dict[str, Path]) -> set[str]:
        """Index one shard run; its queries."""
        queries: set[str] = set()
        try:
            for query in iter_run(run_path, allow_empty=True):
                for tag in dict.fromkeys(t for _, t in sorted(zip(query.lines, query.tags, strict=True))):  # file order
                    tags.setdefault(tag, run_path)
                self._add(shard, run_path, query.qid, (query.offset, query.end, query.first_line))
                queries.add(query.qid)
        except NotGrouped:  # its queries' lines are not together: read whole, as before
            run = read_trec_run(run_path, allow_empty=True)
            for tag in dict.fromkeys(run["tag"]):
                tags.setdefault(tag, run_path)
            for qid, docs in ranked_lists(run).items():
                if qid not in queries:
                    self._add(shard, run_path, qid, docs)
                else:
                    self.where[qid] = docs  # indexed before its lines came back: its whole ranking now
                queries.add(qid)
        return queries

    def _add(self, shard: int, run_path: Path, qid: str, where: tuple[int, int, int] | list[str]) -> None:
        if qid in self.shard_of:
            raise InputError(run_path, None, f"query {qid!r} is in more than one shard")
        self.shard_of[qid], self.where[qid] = shard, where
        self.code.setdefault(qid, len(self.code))

    def ranking(self, qid: str, shard_runs: list[Path]) -> list[str]:
        where = self.where[qid]
        return where if isinstance(where, list) else read_query(shard_runs[self.shard_of[qid]], *where).doc_ids


class _LoggedWindows:
    """Where each window's record is in one shard's reply log: the last record of each
    (query, window), as a merge that reads the log in order keeps."""

    def __init__(self, log_path: Path, code: dict[str, int], shard_qids: set[str], run_path: Path):
        self.path = log_path
        keys, offsets = array("q"), array("q")
        for number, offset, record in reply_log_records(log_path):
            if record["qid"] not in shard_qids:
                raise InputError(
                    log_path, number, f"logged query {record['qid']!r} is not in the shard's run {run_path}"
                )
            keys.append(code[record["qid"]] << 32 | record["window"])
            offsets.append(offset)
        key, offset = np.frombuffer(keys, dtype=np.int64), np.frombuffer(offsets, dtype=np.int64)
        order = np.lexsort((offset, key))  # by (query, window), the last record of each last
        key, offset = key[order], offset[order]
        last = np.r_[key[1:] != key[:-1], True] if len(key) else np.zeros(0, dtype=bool)
        self.keys, self.offsets = key[last], offset[last]
        self.count = len(self.keys)
        self._file = None

    def lines(self, code: int) -> list[bytes]:
        """The records of the query numbered `code`, in window order, as they are in the log."""
        lo, hi = np.searchsorted(self.keys, [code << 32, (code + 1) << 32])
        if lo == hi:
            return []
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        found = []
        for offset in self.offsets[lo:hi].tolist():
            self._file.seek(offset)
            found.append(self._file.readline())
        return found

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _read_stats(path: Path) -> dict[str, Any]:
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, None, "shard stats not found (is this a teacher run?)") from None
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, f"invalid JSON: {e.msg}") from None
    if not isinstance(stats, dict) or not isinstance(stats.get("provenance"), dict):
        raise InputError(path, None, "not a teacher stats file (no provenance)")
    return stats


def run_on_ray(
    runner: type,
    job: Any,
    lists: RunLists,
    first_stage: Path,
    out: Path,
    actors: int,
    block_size: int,
    address: str | None = None,
    gpus_per_actor: float = 0,
    cpus_per_actor: float = 1,
) -> dict[str, Any]:
    """Run `lists` in blocks on Ray actors and merge the blocks into out (+ log, stats).

    Each actor is `runner(job)`, called with batches {"out": [block run], "lists": [its lists
    file]} of one block; it writes the block's run, reply log and stats."""
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
        if not run_stats_path(path).exists():
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
                runner,
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
