"""FIRST single-token ranking vs full generation, same engine, same prompt, same queries.

The tiny random Mistral with RankZephyr's real tokenizer re-ranks the DL19 BM25 top-100
(43 queries x 9 windows = 387 windows) with `prompts/rank_zephyr_alpha.toml` (letter
identifiers) on one vLLM engine, twice per repeat:
  full generation   `Teacher.run`: each window's permutation generated (up to a full
                    permutation's tokens + 2; the random model rarely stops early, as a real
                    teacher that writes out the whole permutation);
  FIRST             `Teacher.run` with `ranking="first"`: one generated token per window, the
                    order from the identifiers' log-probabilities.
The two runs see the same first window of every query; later windows differ as the orders
do, so prompt tokens are reported per path. Prefix caching is off. Each path runs `--repeats`
times (default 3), interleaved, and the table compares medians. Quality cannot be measured
here: it needs a FIRST-trained model (docs/teacher.md, "FIRST").

    .venv/bin/python bench/teacher_first.py [--queries N] [--repeats R]   # bench/results/teacher_first_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("DISTILLM_SHARED", REPO.parent / "shared"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
PATHS = ("full generation", "FIRST (one token)")


def main() -> None:
    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.queries import read_queries
    from pipeline.contract.reply_log import read_reply_log
    from pipeline.contract.run import ranked_lists, read_trec_run
    from pipeline.infra.versions import TEACHER_PACKAGES, versions
    from pipeline.ingestion import ingest_candidates
    from pipeline.offline_models import build_tiny_mistral
    from pipeline.teacher.backends.vllm_engine import VLLMBackend
    from pipeline.teacher.driver import Teacher
    from pipeline.teacher.prompts import load_prompt
    from pipeline.teacher.render import PromptRenderer
    from pipeline.teacher.settings import TeacherSettings

    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=43)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each path (default 3)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-first-"))
    ingest_candidates([SHARED / "data" / "trec-dl" / "retrieve_results_dl19.json"], work)
    lists = dict(list(ranked_lists(read_trec_run(work / "runs" / "retrieve_results_dl19.run")).items())[: args.queries])
    queries = read_queries(work / "queries.tsv")
    corpus = CorpusStore(work / "corpus")
    model = build_tiny_mistral(work / "tiny-mistral")
    renderer = PromptRenderer(str(model))
    template = load_prompt("rank_zephyr_alpha")
    settings = {name: TeacherSettings(model=str(model), prompt=template.name) for name in PATHS}
    settings[PATHS[1]] = TeacherSettings(model=str(model), prompt=template.name, ranking="first")
    backend = VLLMBackend(str(model), dtype="float32", engine_args={"enable_prefix_caching": False})
    Teacher(backend, renderer, settings[PATHS[1]], template, corpus).run(
        dict(list(lists.items())[:1]), queries, work / "warm-up.jsonl", progress=False
    )

    def run(name: str, repeat: int) -> tuple[float, list[dict]]:
        teacher = Teacher(backend, renderer, settings[name], template, corpus)
        log_path = work / f"{'first' if 'FIRST' in name else 'full'}-{repeat}.jsonl"
        start = time.perf_counter()
        teacher.run(lists, queries, log_path, progress=False)
        return time.perf_counter() - start, [r for _, r in read_reply_log(log_path)]

    times: dict[str, list[float]] = {name: [] for name in PATHS}
    records: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        for name in PATHS:
            seconds, records[name] = run(name, repeat)
            times[name].append(seconds)
    first = records[PATHS[1]]
    if any(r["completion_tokens"] != 1 or "first_logprobs" not in r for r in first):
        raise SystemExit("a FIRST window generated more than one token or has no log-probabilities: a bug")
    rows = {name: statistics.median(t) for name, t in times.items()}
    tokens = {
        name: (sum(r["prompt_tokens"] for r in rs), sum(r["completion_tokens"] for r in rs))
        for name, rs in records.items()
    }
    ratio = rows[PATHS[1]] / rows[PATHS[0]]
    n_windows = len(first)
    print(f"{n_windows} windows of {len(lists)} queries; medians of {args.repeats} interleaved runs each")
    print(f"{'path':20} {'seconds':>8} {'min':>7} {'max':>7} {'windows/s':>10} {'prompt tok':>11} {'generated':>10}")
    for name, s in rows.items():
        t = times[name]
        print(
            f"{name:20} {s:>8.2f} {min(t):>7.2f} {max(t):>7.2f} {n_windows / s:>10.2f} "
            f"{tokens[name][0]:>11} {tokens[name][1]:>10}"
        )
    print(f"FIRST / full generation time: {ratio:.3f} ({100 * (1 - ratio):.0f}% less)")
    result = {
        "benchmark": "teacher_first",
        "device": "cpu",
        "model": "tiny random Mistral (2 layers, hidden 128), RankZephyr tokenizer",
        "prompt": "rank_zephyr_alpha (letter identifiers)",
        "windows": n_windows,
        "queries": len(lists),
        "repeats": args.repeats,
        "seconds": {k: round(v, 3) for k, v in rows.items()},
        "runs_seconds": {k: [round(x, 3) for x in t] for k, t in times.items()},
        "prompt_tokens": {k: v[0] for k, v in tokens.items()},
        "generated_tokens": {k: v[1] for k, v in tokens.items()},
        "ratio_first_to_full": round(ratio, 4),
        "versions": versions(TEACHER_PACKAGES),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "teacher_first_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    backend.close()


if __name__ == "__main__":
    main()
