"""Benchmark the teacher's transformers backend with a Mistral-7B-shaped model on a GPU: queries/s.

    .venv/bin/python bench/teacher_transformers_gpu.py --prepare .device/teacher   # here: inputs
    python bench/teacher_transformers_gpu.py --inputs .device/teacher              # the GPU machine
    .venv/bin/python bench/teacher_transformers_gpu.py --inputs .device/teacher --device cpu  # smoke mode

The GPU machine has torch and transformers but no vLLM, no `../shared` and no internet, so
`--prepare` writes what it needs into one folder (a few MB): the DL19 BM25 top-100 (43
queries, their passages as a corpus store) and RankZephyr's tokenizer (Mistral-7B-v0.1's
sentencepiece model and the Zephyr chat template). `bench/device_checks.sh` runs this and
`bench/student_gpu.py` in one go; its header has the whole recipe.

The model has Mistral-7B-v0.1's shape (32 layers, hidden 4096, 32 heads with 8 KV heads,
FFN 14336, vocabulary 32000: 7.24B parameters) and random bf16 weights, built on the GPU in
about a second: shapes decide the cost, the weights do not (ENVIRONMENT.md). Random replies
never stop early, so every window generates its full `max_tokens` (the token count of a full
permutation + 2): the worst case of a real RankZephyr reply. The timed part is `Teacher.run`
(prompt fitting and tokenisation, batching, parsing, the reply log) with the
`TransformersBackend`, top-100, window 20, stride 10 over the DL19 queries: 387 windows.

Two modes of the backend: padded `generate` batches (default, `--batch-size`, 64 here) and
`--continuous-batching` (transformers' paged KV cache, no padding; windows join and leave the
running batch). Goal (issue 6): >= 0.7 queries/s on an H100; the prefill-bound floor there is
~1.7 queries/s. ENVIRONMENT.md measured plain HF `generate` on these windows at 0.31
queries/s (batch 64, left padding with a mask): padding masks, not arithmetic, dominate,
which is what the continuous mode avoids. On CUDA the result goes to bench/results/teacher_transformers_gpu[_continuous].json
and the exit status is 1 below --goal. Self-checks on any device: every window of every
query is logged and parsed, and the output run holds each query's 100 candidates.

Smoke mode (`--device cpu`): the model shrinks to 2 layers, hidden 128 (fp32), 2 queries,
nothing is written and the numbers mean nothing: it proves the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a bare checkout on a GPU machine
SHARED = Path(os.environ.get("DISTILLM_SHARED", REPO.parent / "shared"))

MISTRAL_7B = {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8, "ffn": 14336}
SMOKE = {"layers": 2, "hidden": 128, "heads": 4, "kv_heads": 2, "ffn": 256}
RUN = "runs/retrieve_results_dl19.run"


def prepare(out: Path) -> None:
    """DL19's BM25 top-100 (run, queries, corpus store) and RankZephyr's tokenizer, into out."""
    from pipeline.ingestion import ingest_candidates
    from pipeline.offline_models import save_rankzephyr_tokenizer

    counts = ingest_candidates([SHARED / "data" / "trec-dl" / "retrieve_results_dl19.json"], out)
    save_rankzephyr_tokenizer(out / "tokenizer")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"inputs in {out}: {counts}, {size / 2**20:.1f} MiB")


def build_model(shape: dict[str, int], vocab: int, tokenizer, device, dtype):
    """A MistralForCausalLM of the given shape with random weights, built on the device."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=vocab,
        hidden_size=shape["hidden"],
        intermediate_size=shape["ffn"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        head_dim=shape["hidden"] // shape["heads"],
        max_position_embeddings=32768,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = MistralForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", type=Path, help="write the inputs into this folder and stop")
    parser.add_argument("--inputs", type=Path, help="the folder --prepare wrote")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--queries", type=int, help="DL19 queries to re-rank (43; smoke 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per generate batch (default 64)")
    parser.add_argument("--layers", type=int, help="decoder layers (32; smoke 2)")
    parser.add_argument(
        "--continuous-batching",
        action="store_true",
        help="the backend's continuous mode (no padding) instead of padded batches",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs of a remote run)")
    parser.add_argument("--goal", type=float, default=0.7, help="queries/s to reach on CUDA")
    parser.add_argument(
        "--out",
        type=Path,
        help="result JSON (default on CUDA: bench/results/teacher_transformers_gpu[_continuous].json)",
    )
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare)
        return 0
    if not args.inputs:
        parser.error("--inputs (or --prepare) is required")

    import torch
    import transformers
    from transformers import AutoTokenizer

    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.queries import read_queries
    from pipeline.contract.reply_log import read_reply_log
    from pipeline.contract.run import ranked_lists, read_trec_run
    from pipeline.infra.versions import TEACHER_PACKAGES, versions
    from pipeline.teacher.backends.hf_generate import TransformersBackend
    from pipeline.teacher.driver import Teacher
    from pipeline.teacher.prompts import load_prompt
    from pipeline.teacher.render import PromptRenderer
    from pipeline.teacher.settings import TeacherSettings
    from pipeline.teacher.windows import sliding_windows

    device = torch.device(args.device)
    smoke = device.type == "cpu"
    shape = dict(SMOKE if smoke else MISTRAL_7B)
    if args.layers:
        shape["layers"] = args.layers
    n_queries = args.queries or (2 if smoke else 43)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    tokenizer_dir = str(args.inputs / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dtype = torch.float32 if smoke else torch.bfloat16
    started = time.perf_counter()
    model = build_model(shape, len(tokenizer), tokenizer, device, dtype)
    build_seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    name = f"random Mistral ({shape['layers']} layers, hidden {shape['hidden']}, {parameters / 1e9:.2f}B parameters)"
    lists = dict(list(ranked_lists(read_trec_run(args.inputs / RUN)).items())[:n_queries])
    queries = read_queries(args.inputs / "queries.tsv")
    corpus = CorpusStore(args.inputs / "corpus")
    settings = TeacherSettings(model=name)
    backend = TransformersBackend.from_model(
        model, tokenizer, name, batch_size=args.batch_size, continuous=args.continuous_batching
    )
    teacher = Teacher(backend, PromptRenderer(tokenizer_dir), settings, load_prompt(settings.prompt), corpus)
    with tempfile.TemporaryDirectory(prefix="bench-teacher-gpu-") as work:
        log_path = Path(work) / "teacher.log.jsonl"
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        try:
            reranked = teacher.run(lists, queries, log_path, progress=not args.no_progress)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
        finally:
            backend.close()
        records = [r for _, r in read_reply_log(log_path)]
    windows = len(records)
    expected = sum(
        len(sliding_windows(min(settings.depth, len(docs)), settings.window, settings.stride))
        for docs in lists.values()
    )
    checks = {
        "every_window_logged": windows == expected,
        "every_reply_parsed_to_a_permutation": all(
            sorted(r["permutation"]) == list(range(1, len(r["doc_ids"]) + 1)) for r in records
        ),
        "every_query_keeps_its_candidates": all(sorted(reranked[q]) == sorted(docs) for q, docs in lists.items()),
    }
    prompt_tokens = sum(r["prompt_tokens"] for r in records)
    completion_tokens = sum(r["completion_tokens"] for r in records)
    queries_per_second = len(lists) / seconds
    print(f"{name} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})")
    batching = backend.provenance()["batching"]
    print(
        f"model built in {build_seconds:.1f} s; {batching} batching"
        + (f", batch size {args.batch_size}" if batching == "padded" else "")
    )
    print(
        f"{'queries':>8} {'windows':>8} {'prompt tok':>11} {'new tok':>8} {'seconds':>8} {'queries/s':>10} {'windows/s':>10}"
    )
    print(
        f"{len(lists):>8} {windows:>8} {prompt_tokens:>11} {completion_tokens:>8} {seconds:>8.1f} "
        f"{queries_per_second:>10.3f} {windows / seconds:>10.2f}"
    )
    for check, ok in checks.items():
        print(f"check {check}: {'ok' if ok else 'FAILED'}")
    if smoke:
        print("smoke mode (cpu): the numbers mean nothing, nothing written")
        return 0 if all(checks.values()) else 1
    result = {
        "benchmark": "teacher_transformers_gpu",
        "device": torch.cuda.get_device_name(device),
        "model": name,
        "dtype": str(dtype),
        "batching": batching,
        "batch_size": args.batch_size if batching == "padded" else None,
        "queries": len(lists),
        "windows": windows,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "seconds": round(seconds, 3),
        "queries_per_second": round(queries_per_second, 4),
        "windows_per_second": round(windows / seconds, 3),
        "repair_rate": teacher.tally.summary()["repair_rate"],
        "model_build_seconds": round(build_seconds, 2),
        "goal_queries_per_second": args.goal,
        "checks": checks,
        "versions": {
            **versions(TEACHER_PACKAGES),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    suffix = "_continuous" if args.continuous_batching else ""
    out = args.out or REPO / "bench" / "results" / f"teacher_transformers_gpu{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {out}")
    return 0 if all(checks.values()) and queries_per_second >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
