"""The teacher's driver at paper scale and beyond: 1k, 10k and 100k queries (900k windows).

No model: the cost measured is the driver's own (prompt building, hashing, parsing, logging,
bookkeeping), the reply log, resuming, replay, the shard merge and the Ray block merge, which
is what must not grow faster than the number of windows. Data (seeded, under `--work`):

- corpus store: `--corpus` (default: the 8.8M-passage store `bench/scale_corpus.py --keep`
  leaves at /tmp/scale/corpus/store, if there; else a 200k-passage store built here from the
  TREC DL passages), so a query's 100 candidates are looked up in a store of that size;
- queries: real query texts (MS MARCO dev-small and TREC DL topics) under new ids, cycled;
- first-stage run: 100 distinct random passages per query, scores decreasing.

Measured, each in its own process (time, CPU time, peak RSS and peak anonymous RSS, i.e.
without the store's memory-mapped pages):

1. `instant` at each `--sizes`: the single-process teacher (`run_to_files`, as `distillm
   rerank` runs it) with a backend that answers every window at once with a permutation
   drawn from the prompt's hash; per-window driver time, memory, reply-log size; then the
   largest again over its complete log: reading the inputs, then resuming every window;
2. `distillm rerank --backend replay:LOG` at the largest size over that log (900k windows at
   100k queries): the replay index and the driver, from the command line;
3. the same command again: everything is resumed from its log (target: under a minute);
4. `--shard I/4` x 4 (replay), then `distillm merge-shards`;
5. `--engine ray` (replay, 2 actors, blocks of `--block-size`), then the same command again,
   which finds every block done and only merges them.

Outputs of 2-5 are checked equal to the instant run's. Goals at 100k queries: peak memory
under 2 GB everywhere; driver time per window within 10% of the 1k-query one; resume < 60 s.

    .venv/bin/python bench/scale_teacher.py                                  # 1k and 10k queries, ~10 min
    .venv/bin/python bench/scale_teacher.py --sizes 1000,10000,100000        # paper scale x 10, ~1.5 h
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_common import (
    REPO,
    WORK,
    disk_mib,
    dl_passages,
    measure_command,
    measure_python,
    real_queries,
    write_result,
)

sys.path.insert(0, str(REPO))
DEPTH, WINDOW = 100, 20


class InstantBackend:
    """A model that answers each window as it is submitted: the permutation of the window's
    identifiers that the prompt's hash seeds (zero cost, so the driver's cost is all there is)."""

    name = "instant"
    supports_partial = False

    def __init__(self) -> None:
        self.ready: list = []

    def submit(self, request) -> None:
        from pipeline.teacher.backends import Reply

        order = random.Random(request.prompt_sha256).sample(range(1, WINDOW + 1), WINDOW)
        self.ready.append(Reply(request.key, " > ".join(f"[{i}]" for i in order), 60))

    def poll(self) -> list:
        done, self.ready = self.ready, []
        return done

    def cancel(self, key: str) -> None:
        self.ready = [r for r in self.ready if r.key != key]

    def stop_partial(self, key: str) -> None:
        pass

    def close(self) -> None:
        pass

    def provenance(self) -> dict:
        return {"backend": self.name}


def instant_run(run: str, queries: str, corpus: str, out: str) -> dict:
    """One teacher run over `run` with the instant backend, as `distillm rerank` runs it."""
    from pipeline.contract.rerank_inputs import read_rerank_lists
    from pipeline.teacher.driver import Teacher
    from pipeline.teacher.job import run_to_files
    from pipeline.teacher.prompts import load_prompt, passage_content
    from pipeline.teacher.render import PromptRenderer
    from pipeline.teacher.resume import prepare_log, settings_record
    from pipeline.teacher.settings import TeacherSettings

    # The synthetic store repeats the 9,658 DL texts, so after the first ~10k passages ftfy's
    # cost (~1.6 ms for each passage it must repair) is cached away whatever the run's size;
    # warm that cache first, so that every size measures the driver alone.
    started = time.perf_counter()
    for text in dl_passages():
        passage_content(text, None, 300, "numbers")  # as build_messages calls it: the same cache key
    warm_seconds = time.perf_counter() - started
    out_path = Path(out)
    started = time.perf_counter()
    lists, query_texts, store = read_rerank_lists(run, queries, corpus, out_path.with_name("instant.lists.tmp"))
    read_seconds = time.perf_counter() - started
    settings = TeacherSettings(model="instant", depth=DEPTH, window=WINDOW)
    template = load_prompt(settings.prompt)
    log_path = out_path.with_name(out_path.name + ".log.jsonl")
    prepare_log(log_path, settings_record(settings, template, None))
    teacher = Teacher(InstantBackend(), PromptRenderer(None), settings, template, store)
    stats = run_to_files(
        teacher,
        lists,
        query_texts,
        out_path,
        log_path,
        out_path.with_name(out_path.name + ".stats.json"),
        "teacher",
        {},
        progress=False,
    )
    lists.close()
    return {
        "passage_cache_warm_up_seconds": warm_seconds,
        "read_inputs_seconds": read_seconds,
        "driver_seconds": stats["seconds"],
        "windows": stats["windows"],
    }


_INSTANT = """
from scale_teacher import instant_run
print(json.dumps(instant_run(*sys.argv[1:])))
"""


def write_inputs(work: Path, n_queries: int, store: Path, seed: int) -> dict[str, Path]:
    """queries.tsv and the first-stage run (n_queries x DEPTH random passages of the store)."""
    from pipeline.contract.corpus import CorpusStore

    passages = len(CorpusStore(store))
    texts = real_queries()
    rng = np.random.default_rng(seed)
    paths = {"queries": work / f"queries-{n_queries}.tsv", "run": work / f"bm25-{n_queries}.run"}
    scores = [f"{20 - 0.1 * r:.4f}" for r in range(DEPTH)]
    with open(paths["queries"], "w") as q, open(paths["run"], "w") as run:
        for i in range(n_queries):
            q.write(f"q{i}\t{texts[i % len(texts)]}\n")
            docs = rng.choice(passages, DEPTH, replace=False).tolist()
            run.write("".join(f"q{i} Q0 {d} {r + 1} {scores[r]} bm25\n" for r, d in enumerate(docs)))
    return paths


def build_store(work: Path, n: int, seed: int) -> Path:
    """A corpus store of n passages with ids 0..n-1 and texts drawn from the DL pool."""
    from pipeline.contract.corpus import Passage, build_corpus_store

    store = work / f"store-{n}"
    if not (store / "store.json").exists():
        texts, rng = dl_passages(), np.random.default_rng(seed)
        picks = rng.integers(0, len(texts), n).tolist()
        build_corpus_store(((i, Passage(str(i), texts[p])) for i, p in enumerate(picks)), store, "synthetic", False)
    return store


def same_rankings(a: Path, b: Path) -> bool:
    """Two runs hold the same lines (byte for byte)."""
    return hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="numbers of queries of the instant runs")
    parser.add_argument("--corpus", type=Path, help="corpus store (default: see the docstring)")
    parser.add_argument("--block-size", type=int, default=1000, help="Ray: queries per block")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=WORK / "teacher")
    parser.add_argument("--keep", action="store_true", help="keep the generated runs and logs")
    args = parser.parse_args()

    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    default_store = WORK / "corpus" / "store"
    store = args.corpus or (default_store if (default_store / "store.json").exists() else None)
    store = store or build_store(work, 200_000, args.seed)
    from pipeline.contract.corpus import CorpusStore

    results: dict = {"corpus_store": str(store), "corpus_passages": len(CorpusStore(store)), "instant": {}}
    print(f"corpus store {store}: {results['corpus_passages']:,} passages")
    print(f"{'step':44} {'queries':>8} {'windows':>8} {'seconds':>8} {'us/window':>9} {'peak anon MiB':>13}")

    def show(step: str, n: int, r: dict) -> None:
        per = r.get("us_per_window")
        child = r.get("peak_child_anon_mib") or 0
        print(
            f"{step:44} {n:>8,} {r.get('windows', 0):>8,} {r['seconds']:>8.1f} "
            f"{'' if per is None else f'{per:.1f}':>9} {r['peak_anon_mib']:>13.0f}"
            + (f" (largest child process {child:.0f})" if child else "")
        )

    for n in sizes:
        paths = write_inputs(work, n, store, args.seed)
        out = work / f"instant-{n}.run"
        r = measure_python(_INSTANT, str(paths["run"]), str(paths["queries"]), str(store), str(out))
        r["us_per_window"] = r["driver_seconds"] / r["windows"] * 1e6
        r["reply_log_mib"] = disk_mib(out.with_name(out.name + ".log.jsonl"))
        r["reply_log_bytes_per_window"] = round(r["reply_log_mib"] * 2**20 / r["windows"])
        r["run_mib"] = disk_mib(out)
        results["instant"][n] = r
        show("instant backend (driver, in process)", n, r)
    n = sizes[-1]  # paths and out: the largest size's
    r = measure_python(_INSTANT, str(paths["run"]), str(paths["queries"]), str(store), str(out))
    results["instant_resume"] = {**r, "queries": n}
    show("instant again: all resumed from its log", n, r)
    base = results["instant"][sizes[0]]["us_per_window"]
    for size in sizes:
        results["instant"][size]["per_window_vs_smallest"] = round(results["instant"][size]["us_per_window"] / base, 3)

    instant = work / f"instant-{n}.run"
    log = instant.with_name(instant.name + ".log.jsonl")
    windows = results["instant"][n]["windows"]
    common = ["--run", str(paths["run"]), "--queries", str(paths["queries"]), "--corpus", str(store)]
    common += ["--backend", f"replay:{log}", "--no-progress"]
    quiet = {"TQDM_DISABLE": "1"}

    replay = work / "replay.run"
    results["replay"] = measure_command(["rerank", *common, "--out", str(replay)], quiet)
    results["replay"].update(windows=windows, us_per_window=results["replay"]["seconds"] / windows * 1e6)
    results["replay"]["output_equals_instant"] = same_rankings(replay, instant)
    show("rerank --backend replay:LOG (command)", n, results["replay"])

    results["resume"] = measure_command(["rerank", *common, "--out", str(replay)], quiet)
    results["resume"].update(windows=windows, output_equals_instant=same_rankings(replay, instant))
    show("same command again: all resumed from its log", n, results["resume"])

    shards = [work / "shards" / f"teacher.{i}.run" for i in range(4)]
    results["shards"] = [
        measure_command(["rerank", *common, "--shard", f"{i}/4", "--out", str(p)], quiet) for i, p in enumerate(shards)
    ]
    merged = work / "merged.run"
    merge = ["merge-shards", "--run", str(paths["run"]), "--out", str(merged), *map(str, shards)]
    results["merge_shards"] = measure_command(merge, quiet)
    results["merge_shards"].update(windows=windows, output_equals_instant=same_rankings(merged, instant))
    show("merge-shards (4 shards)", n, results["merge_shards"])

    if not args.skip_ray:
        ray_run = work / "ray.run"
        ray_args = ["rerank", *common, "--engine", "ray", "--ray-actors", "2", "--block-size", str(args.block_size)]
        ray_env = {**quiet, "RAY_DEDUP_LOGS": "0"}
        results["ray"] = measure_command([*ray_args, "--out", str(ray_run)], ray_env)
        results["ray"].update(windows=windows, output_equals_instant=same_rankings(ray_run, instant))
        show(f"--engine ray, blocks of {args.block_size} (driver)", n, results["ray"])
        results["ray_merge_only"] = measure_command([*ray_args, "--out", str(ray_run)], ray_env)
        results["ray_merge_only"].update(windows=windows, output_equals_instant=same_rankings(ray_run, instant))
        show("--engine ray again: every block done, merge", n, results["ray_merge_only"])

    results["goals"] = {"peak_memory_mib": 2048, "per_window_vs_smallest": 1.10, "resume_seconds": 60}
    print("goals at 100k queries: peak < 2 GB; driver per window within 10% of 1k queries; resume < 60 s")
    name = "scale_teacher" if n >= 100_000 else f"scale_teacher_{n}"
    print(f"-> {write_result(name, results)}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
