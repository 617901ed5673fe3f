"""The cost model of a teacher run at 10k, 100k and 1M queries, and which stage bounds it.

Measured here: prompt tokens per window with RankZephyr's real tokenizer and chat template
(`mistral-common`'s Mistral-7B sentencepiece model, `pipeline.offline_models`) and the
`rank_zephyr` prompt over the TREC DL 2019 + 2020 BM25 top-100s (97 queries, 873 windows,
depth 100 / window 20 / stride 10, 300 words per passage), with replies drawn at once (the
instant backend of `bench/scale_teacher.py`: only which passages share a window depends on
them); the tokens of a 20-id permutation. From the other scale benchmarks' results (run them
first, at full scale): the driver's time per window, reply-log bytes per window, dataset bytes
per row, BM25 time per query at 8.8M passages. From ../shared/ENVIRONMENT.md (measured on an
H100): prefill of a 7B Mistral at ~34k tokens/s; HF `generate` with 90 forced new tokens on
equal-length 2,048-token prompts at 8.1 windows/s. Everything else is derived, and the table
says which is which.

    .venv/bin/python bench/scale_cost.py     # table (markdown) + bench/results/scale_cost.json
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_common import REPO, TREC_DL, write_result
from scale_teacher import InstantBackend

H100_PREFILL_TOKENS_PER_S = 34_000  # ENVIRONMENT.md: 7.24B Mistral, 2,048-token prompts, batch 1-32
H100_GENERATE_WINDOWS_PER_S = 8.1  # ENVIRONMENT.md: HF generate, 64 x 2,048 tokens + 90 new tokens, no padding
SCALES = (10_000, 100_000, 1_000_000)
RESULTS = REPO / "bench" / "results"


def measure_tokens(work: Path) -> dict:
    """Prompt tokens per window (mean, p95, max) and the permutation's tokens, on the DL top-100s."""
    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.queries import read_queries
    from pipeline.contract.reply_log import read_reply_log
    from pipeline.contract.run import ranked_lists, read_trec_run
    from pipeline.ingestion import ingest_candidates
    from pipeline.offline_models import build_tiny_mistral
    from pipeline.teacher.driver import Teacher
    from pipeline.teacher.prompts import load_prompt
    from pipeline.teacher.render import PromptRenderer
    from pipeline.teacher.settings import TeacherSettings

    ingest_candidates([TREC_DL / "retrieve_results_dl19.json", TREC_DL / "retrieve_results_dl20.json"], work)
    lists = {}
    for name in ("retrieve_results_dl19.run", "retrieve_results_dl20.run"):
        lists.update(ranked_lists(read_trec_run(work / "runs" / name)))
    renderer = PromptRenderer(str(build_tiny_mistral(work / "tiny", layers=1)))  # RankZephyr's tokenizer
    settings = TeacherSettings(model="instant")
    teacher = Teacher(InstantBackend(), renderer, settings, load_prompt(settings.prompt), CorpusStore(work / "corpus"))
    teacher.run(lists, read_queries(work / "queries.tsv"), work / "log.jsonl", progress=False)
    tokens = np.array([r["prompt_tokens"] for _, r in read_reply_log(work / "log.jsonl")])
    permutation = " > ".join(f"[{i}]" for i in range(20, 0, -1))
    return {
        "queries": len(lists),
        "windows": len(tokens),
        "prompt_tokens_per_window_mean": round(float(tokens.mean()), 1),
        "prompt_tokens_per_window_p95": int(np.percentile(tokens, 95)),
        "prompt_tokens_per_window_max": int(tokens.max()),
        "prompt_tokens_per_query_mean": round(float(tokens.sum()) / len(lists), 1),
        "windows_with_shrunk_passages": teacher.tally.shrunk,
        "permutation_tokens": len(renderer.tokenizer(permutation, add_special_tokens=False)["input_ids"]),
        "reply_budget_tokens": renderer.permutation_tokens(20),
    }


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="scale-cost-"))
    try:
        tokens = measure_tokens(work)
    finally:
        shutil.rmtree(work)
    teacher, export, bm25 = load("scale_teacher"), load("scale_export"), load("scale_bm25")
    windows_per_query = tokens["windows"] / tokens["queries"]
    prompt = tokens["prompt_tokens_per_window_mean"]
    generated = tokens["permutation_tokens"]
    driver_us = teacher["instant"]["100000"]["us_per_window"] if teacher else None
    log_bytes = teacher["instant"]["100000"]["reply_log_bytes_per_window"] if teacher else None
    rows = []
    for n in SCALES:
        windows = n * windows_per_query
        prefill_h = windows * prompt / H100_PREFILL_TOKENS_PER_S / 3600
        generate_h = windows / H100_GENERATE_WINDOWS_PER_S / 3600
        row = {
            "queries": n,
            "windows": round(windows),
            "prompt_tokens": round(windows * prompt),
            "generated_tokens": round(windows * generated),
            "h100_hours_prefill_floor": round(prefill_h, 1),
            "h100_hours_hf_generate": round(generate_h, 1),
            "hours_on_8_gpus_ray": [round(prefill_h / 8, 1), round(generate_h / 8, 1)],
            "hours_on_64_gpus_ray": [round(prefill_h / 64, 2), round(generate_h / 64, 2)],
            "driver_cpu_hours": None if driver_us is None else round(windows * driver_us / 1e6 / 3600, 2),
            "reply_log_gib": None if log_bytes is None else round(windows * log_bytes / 2**30, 2),
        }
        if teacher:  # single-process steps, scaled linearly from 100k queries (measured here)
            per_window = {k: teacher[k]["seconds"] / teacher[k]["windows"] for k in ("resume", "merge_shards")}
            row["resume_minutes"] = round(windows * per_window["resume"] / 60, 1)
            row["merge_minutes"] = round(windows * per_window["merge_shards"] / 60, 1)
        if export:
            mib = export["dataset_mib"]
            rows_done = export["rows"]
            row["dataset_gib"] = [round(n * 100 * mib[k] / rows_done / 1024, 2) for k in ("no text", "with text")]
            row["export_minutes"] = [
                round(n * 100 / export["steps"][k]["rows_per_second"] / 60, 1) for k in ("export", "export --with-text")
            ]
        if bm25:  # the search loop on this machine's 2 cores, at the extrapolated 8.8M-passage cost
            row["bm25_retrieval_hours_2_cores"] = round(n * bm25["extrapolation_8.8M"]["ms_per_query"] / 1000 / 3600, 2)
        rows.append(row)
    result = {
        "measured_here": tokens,
        "from_environment_md": {
            "h100_prefill_tokens_per_second": H100_PREFILL_TOKENS_PER_S,
            "h100_hf_generate_windows_per_second": H100_GENERATE_WINDOWS_PER_S,
        },
        "from_other_benchmarks": {
            "driver_us_per_window_at_100k": driver_us,
            "reply_log_bytes_per_window": log_bytes,
            "export": None if export is None else {"rows": export["rows"], "dataset_mib": export["dataset_mib"]},
            "bm25_8.8M": None if bm25 is None else bm25["extrapolation_8.8M"],
        },
        "scales": rows,
    }
    print(json.dumps(tokens, indent=2))
    print(
        "| queries | windows | prompt tokens | generated tokens | H100-hours (prefill floor / HF generate) | 8 GPUs | reply log | dataset (no text / text) |"
    )
    for r in rows:
        print(
            f"| {r['queries']:,} | {r['windows']:,} | {r['prompt_tokens'] / 1e9:.2f}B | {r['generated_tokens'] / 1e6:.0f}M "
            f"| {r['h100_hours_prefill_floor']} / {r['h100_hours_hf_generate']} | {r['hours_on_8_gpus_ray']} "
            f"| {r['reply_log_gib']} GiB | {r.get('dataset_gib')} GiB |"
        )
    print(f"-> {write_result('scale_cost', result)}")


if __name__ == "__main__":
    main()
