"""Teacher overhead: the whole sliding-window driver with no model (replay backend).

RankVicuna's real DL19 replies (shared/reference, 387 windows = 43 queries x 9) are
replayed through `Teacher.run`: prompt building, hashing, parsing, repair, logging
(fsync per window) and permutation bookkeeping are all that is timed. Two settings:
no tokenizer (pure replay, the `replay:LOG` command) and with RankZephyr's tokenizer
(chat template + token counting per window, as with a real engine).

    .venv/bin/python bench/teacher_replay.py   # table + bench/results/teacher_replay.json
"""

from __future__ import annotations

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

from pipeline.contract.corpus import CorpusStore  # noqa: E402
from pipeline.contract.qrels import read_qrels  # noqa: E402
from pipeline.contract.queries import read_queries  # noqa: E402
from pipeline.contract.run import ranked_lists, read_trec_run, run_from_lists  # noqa: E402
from pipeline.evaluation.measures import evaluate  # noqa: E402
from pipeline.ingestion import ingest_candidates  # noqa: E402
from pipeline.teacher.driver import Teacher  # noqa: E402
from pipeline.teacher.prompts import load_prompt, passage_content  # noqa: E402
from pipeline.teacher.recorded_replies import ingest_files  # noqa: E402
from pipeline.teacher.render import PromptRenderer  # noqa: E402
from pipeline.teacher.reuse import ReplayBackend  # noqa: E402
from pipeline.teacher.settings import TeacherSettings  # noqa: E402


def main() -> None:
    trec_dl = SHARED / "data" / "trec-dl"
    work = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    ingest_candidates([trec_dl / "retrieve_results_dl19.json"], work)
    lists = ranked_lists(read_trec_run(work / "runs" / "retrieve_results_dl19.run"))
    queries = read_queries(work / "queries.tsv")
    corpus = CorpusStore(work / "corpus")
    log = work / "rankvicuna.jsonl"
    ingest_files(
        SHARED / "reference" / "teacher_runs" / "rankvicuna7b" / "prompts_responses_dl19.json",
        work / "runs" / "retrieve_results_dl19.run",
        work / "queries.tsv",
        work / "corpus",
        "rank_vicuna",
        "castorini/rank_vicuna_7b_v1",
        log,
    )

    settings = TeacherSettings(model="replay", prompt="rank_vicuna")
    results = {}
    for label, tokenizer in (("replay, no tokenizer", None), ("replay + RankZephyr tokenizer", "tokenizer")):
        renderer = PromptRenderer(None)
        if tokenizer:
            from pipeline.offline_models import build_tiny_mistral

            renderer = PromptRenderer(str(build_tiny_mistral(work / "tiny", layers=1)))
        for cache in ("cold", "warm"):
            # cold: every passage goes through ftfy once, as in a real run; warm: passage
            # texts are memoised from an earlier run in the process (the driver's own cost)
            times = []
            for repeat in range(3):
                if cache == "cold":
                    passage_content.cache_clear()
                teacher = Teacher(ReplayBackend(log), renderer, settings, load_prompt(settings.prompt), corpus)
                out_log = work / f"out-{len(results)}-{repeat}.jsonl"
                start = time.perf_counter()
                out = teacher.run(lists, queries, out_log, progress=False)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            values, _ = evaluate(run_from_lists(out, "replay"), read_qrels(trec_dl / "qrels.dl19-passage.txt"))
            results[f"{label}, {cache} passage cache"] = {
                "windows": teacher.tally.windows,
                "seconds_median": round(seconds, 4),
                "windows_per_second": round(teacher.tally.windows / seconds, 1),
                "nDCG@10": round(values["nDCG@10"], 4),
                "repair_rate": round(teacher.tally.summary()["repair_rate"], 4),
            }
    reference = evaluate(
        read_trec_run(SHARED / "reference" / "teacher_runs" / "rankvicuna7b" / "run_dl19.txt"),
        read_qrels(trec_dl / "qrels.dl19-passage.txt"),
    )[0]["nDCG@10"]

    print(f"{'setting':56} {'windows':>8} {'seconds':>8} {'windows/s':>10} {'nDCG@10':>8}")
    for label, r in results.items():
        print(
            f"{label:56} {r['windows']:>8} {r['seconds_median']:>8.3f} {r['windows_per_second']:>10.1f} "
            f"{r['nDCG@10']:>8.4f}"
        )
    print(f"rank_llm's own RankVicuna run (reference): nDCG@10 {reference:.4f}; goal >= 2,000 windows/s")
    out = {
        "benchmark": "teacher_replay",
        "data": "DL19 BM25 top-100, RankVicuna-7B replies from rank_llm",
        "results": results,
        "reference_run_nDCG@10": round(reference, 4),
        "goal_windows_per_second": 2000,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "teacher_replay.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
