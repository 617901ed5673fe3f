"""Teacher on vLLM vs plain `LLM.generate` on the same prompts, one engine, one process.

The tiny random Mistral with RankZephyr's real tokenizer re-ranks the DL19 BM25 top-100
(43 queries x 9 windows = 387 windows, ~850k prompt tokens). Timed:
  ours        `Teacher.run` with the vLLM backend: prompt fitting and tokenisation,
              request-by-request submission, each query's next window submitted as soon as
              the head of its previous reply has settled (early submission), parsing,
              logging (fsync per window);
  ours without early submission
              the same, each window submitted only when its previous reply has finished;
  generate    `LLM.generate` on the very same token ids and max_tokens, all 387 at once
              (what you get when the windows do not depend on each other);
  lock-step   `LLM.generate` in 9 rounds of 43 (one window per query per round), the
              usual implementation of a sliding window over a batch of queries.
Prefix caching is off so that a repeated prompt is not served from the cache. Each path runs
`--repeats` times (default 3), interleaved, and the table compares medians; it also gives the
CPU seconds the driver process used (ours: prompts, parsing, logging, streaming; generate:
vLLM's own input and output processing), which on a CPU machine the engine cannot use.

    .venv/bin/python bench/teacher_vllm.py [--queries N] [--repeats R]   # bench/results/teacher_vllm_cpu.json

`--ranker DIR` uses the tiny Mistral of `bench/tiny_ranker.py` (built into DIR first if
absent, a few minutes), which replies with ~well-formed permutations as a real teacher
does, instead of the random one (whose replies never settle a window's head, so that
early submission never happens): results in `teacher_vllm_cpu_ranker.json`.
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

from pipeline.shared_data import data_root  # noqa: E402  (data/shared, else ../shared)

SHARED = Path(os.environ.get("DISTILLM_SHARED", data_root(REPO)))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
PATHS = (
    "ours (Teacher.run, vllm backend)",
    "ours without early submission",
    "LLM.generate, all windows at once",
    "LLM.generate, lock-step rounds",
)


def main() -> None:
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.queries import read_queries
    from pipeline.contract.reply_log import read_reply_log
    from pipeline.contract.run import ranked_lists, read_trec_run
    from pipeline.infra.versions import TEACHER_PACKAGES, versions
    from pipeline.ingestion import ingest_candidates
    from pipeline.offline_models import build_tiny_mistral
    from pipeline.teacher.backends.vllm_engine import VLLMBackend
    from pipeline.teacher.driver import Teacher
    from pipeline.teacher.prompts import fit_messages, load_prompt
    from pipeline.teacher.render import PromptRenderer, permutation_regex
    from pipeline.teacher.settings import TeacherSettings

    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=43)
    parser.add_argument(
        "--constrained", action="store_true", help="regex-constrained decoding on both paths: well-formed replies"
    )
    parser.add_argument("--ranker", type=Path, help="use (and build if absent) the tiny ranker in this folder")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each path (default 3)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    ingest_candidates([SHARED / "data" / "trec-dl" / "retrieve_results_dl19.json"], work)
    lists = dict(list(ranked_lists(read_trec_run(work / "runs" / "retrieve_results_dl19.run")).items())[: args.queries])
    queries = read_queries(work / "queries.tsv")
    corpus = CorpusStore(work / "corpus")
    if args.ranker:
        from bench.tiny_ranker import build_tiny_ranker

        model = build_tiny_ranker(args.ranker.resolve(), SHARED)
        model_name = "tiny Mistral (2 layers, hidden 128) trained to answer the first-stage order"
    else:
        model = build_tiny_mistral(work / "tiny-mistral")
        model_name = "tiny random Mistral (2 layers, hidden 128), RankZephyr tokenizer"
    renderer = PromptRenderer(str(model))
    settings = TeacherSettings(model=str(model), constrained=args.constrained)
    template = load_prompt(settings.prompt)
    backend = VLLMBackend(str(model), dtype="float32", engine_args={"enable_prefix_caching": False})
    max_tokens = Teacher(backend, renderer, settings, template, corpus).prompts.reply_tokens(20)
    extra = {}
    if args.constrained:
        from vllm.sampling_params import StructuredOutputsParams

        extra["structured_outputs"] = StructuredOutputsParams(regex=permutation_regex(20))

    def ours(tag: str, early: bool = True) -> tuple[float, list[dict], Teacher, float]:
        """Seconds, the reply log, the teacher, and the CPU seconds of this (the driver's) process."""
        teacher = Teacher(backend, renderer, settings, template, corpus, early=early)
        log_path = work / f"{tag}.jsonl"
        cpu_start = time.process_time()
        start = time.perf_counter()
        teacher.run(lists, queries, log_path, progress=False)
        seconds = time.perf_counter() - start
        return seconds, [r for _, r in read_reply_log(log_path)], teacher, time.process_time() - cpu_start

    def generate(prompts: list[list[int]]) -> tuple[float, list[str]]:
        start = time.perf_counter()
        outputs = backend.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts],
            SamplingParams(temperature=0.0, max_tokens=max_tokens, **extra),
            use_tqdm=False,
        )
        return time.perf_counter() - start, [o.outputs[0].text for o in outputs]

    generate([[1, 2, 3]] * 4)  # warm-up
    seconds_ours, records, teacher, cpu_ours = ours("early-0")
    prompts_by_round: dict[int, list[list[int]]] = {}
    replies_by_round: dict[int, list[str]] = {}
    for r in records:
        passages = [(p.text, p.title) for p in corpus.passages(r["doc_ids"])]
        messages, _, _ = fit_messages(
            template,
            queries[r["qid"]],
            passages,
            renderer.count_tokens,
            settings.max_model_len - max_tokens,
            settings.max_words,
        )
        prompts_by_round.setdefault(r["window"], []).append(renderer.render(messages)[1])
        replies_by_round.setdefault(r["window"], []).append(r["reply"])
    all_prompts = [p for w in sorted(prompts_by_round) for p in prompts_by_round[w]]
    our_replies = [t for w in sorted(replies_by_round) for t in replies_by_round[w]]
    # every path runs `repeats` times, interleaved, so that a noisy spell on the shared
    # machine hits all of them alike; the table compares medians
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    driver_cpu: dict[str, list[float]] = {name: [] for name in PATHS}
    plain_records = None
    for repeat in range(args.repeats):
        if repeat:
            seconds_ours, _, _, cpu_ours = ours(f"early-{repeat}")
        times[PATHS[0]].append(seconds_ours)
        driver_cpu[PATHS[0]].append(cpu_ours)
        seconds, plain_records, _, cpu = ours(f"plain-{repeat}", early=False)
        times[PATHS[1]].append(seconds)
        driver_cpu[PATHS[1]].append(cpu)
        cpu_start = time.process_time()
        seconds, generate_replies = generate(all_prompts)
        times[PATHS[2]].append(seconds)
        driver_cpu[PATHS[2]].append(time.process_time() - cpu_start)
        cpu_start = time.process_time()
        times[PATHS[3]].append(sum(generate(prompts_by_round[w])[0] for w in sorted(prompts_by_round)))
        driver_cpu[PATHS[3]].append(time.process_time() - cpu_start)
    # same prompts, greedy: the replies should be the same text (batch composition can
    # still flip a near-tie in float arithmetic)
    same_replies = sum(a == b for a, b in zip(our_replies, generate_replies, strict=True))
    if _comparable(records) != _comparable(plain_records):
        raise SystemExit("early submission changed the reply log: a bug")
    rows = {name: statistics.median(t) for name, t in times.items()}
    seconds_generate = rows[PATHS[2]]
    prompt_tokens = sum(len(p) for p in all_prompts)
    completion_tokens = sum(r["completion_tokens"] for r in records)
    print(f"{len(records)} windows, {prompt_tokens} prompt tokens, {completion_tokens} generated tokens")
    print(f"windows submitted early: {teacher.tally.early}, redone: {teacher.tally.early_redone}")
    print(f"replies identical to LLM.generate's: {same_replies}/{len(records)}")
    print(f"medians of {args.repeats} interleaved runs each; driver CPU: seconds of CPU the driver process used")
    print(f"{'path':36} {'seconds':>8} {'min':>7} {'max':>7} {'windows/s':>10} {'ratio':>6} {'driver CPU':>11}")
    for name, s in rows.items():
        t = times[name]
        print(
            f"{name:36} {s:>8.2f} {min(t):>7.2f} {max(t):>7.2f} {len(records) / s:>10.2f} "
            f"{s / seconds_generate:>6.3f} {statistics.median(driver_cpu[name]):>11.2f}"
        )
    result = {
        "benchmark": "teacher_vllm",
        "device": "cpu",
        "model": model_name,
        "decoding": "regex-constrained (both paths)" if args.constrained else "free",
        "windows": len(records),
        "queries": len(lists),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "windows_submitted_early": teacher.tally.early,
        "early_windows_redone": teacher.tally.early_redone,
        "replies_identical_to_generate": same_replies,
        "repeats": args.repeats,
        "seconds": {k: round(v, 3) for k, v in rows.items()},
        "runs_seconds": {k: [round(x, 3) for x in t] for k, t in times.items()},
        "driver_cpu_seconds": {k: [round(x, 3) for x in t] for k, t in driver_cpu.items()},
        "ratio_ours_to_generate": round(rows[PATHS[0]] / seconds_generate, 4),
        "ratio_plain_to_generate": round(rows[PATHS[1]] / seconds_generate, 4),
        "ratio_lockstep_to_generate": round(rows[PATHS[3]] / seconds_generate, 4),
        "goal_ratio": 1.05,
        "versions": versions(TEACHER_PACKAGES),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    name = "teacher_vllm_cpu" + ("_ranker" if args.ranker else "") + ("_constrained" if args.constrained else "")
    name += ".json"
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / name).write_text(json.dumps(result, indent=2) + "\n")
    backend.close()


def _comparable(records: list[dict]) -> list[dict]:
    """Log records in (query, window) order, without their timings."""
    return sorted(
        ({k: v for k, v in r.items() if k != "seconds"} for r in records), key=lambda r: (r["qid"], r["window"])
    )


if __name__ == "__main__":
    main()
