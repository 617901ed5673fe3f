"""A tiny Mistral that answers every window with a well-formed permutation, for benchmarks.

The random-weight tiny Mistral of the tests replies with noise (or, under a regex, with one
identifier repeated), so a benchmark on it never sees what a real teacher's reply looks
like. This one is the same architecture (2 layers, hidden 128, RankZephyr's tokenizer),
briefly trained on DL19 BM25 windows to reply `[1] > [2] > ... > [20]` (the first-stage
order, the answer that needs no understanding of the passages): ~90 tokens per window,
every identifier once, so timings of the decoding path (and of submitting a window before
the previous reply has finished) are those of a well-behaved teacher. Deterministic
(seeded); a few minutes on 2 CPU cores.

    .venv/bin/python bench/tiny_ranker.py --out /tmp/tiny-ranker   # builds and checks it
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.shared_data import data_root  # noqa: E402  (data/shared, else ../shared)


def build_tiny_ranker(out: Path, shared: Path, steps: int = 300, seed: int = 0) -> Path:
    """Train the tiny ranker into `out` (a model folder vLLM and transformers load); returns out."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.contract.corpus import CorpusStore
    from pipeline.contract.queries import read_queries
    from pipeline.contract.run import ranked_lists, read_trec_run
    from pipeline.ingestion import ingest_candidates
    from pipeline.offline_models import build_tiny_mistral
    from pipeline.teacher.prompts import build_messages, load_prompt
    from pipeline.teacher.render import PromptRenderer
    from pipeline.teacher.windows import sliding_windows

    if (out / "config.json").exists():
        return out
    work = out.with_name(out.name + ".work")
    ingest_candidates([shared / "data" / "trec-dl" / "retrieve_results_dl19.json"], work)
    lists = ranked_lists(read_trec_run(work / "runs" / "retrieve_results_dl19.run"))
    queries, corpus = read_queries(work / "queries.tsv"), CorpusStore(work / "corpus")
    base = build_tiny_mistral(work / "tiny-mistral", seed=seed)
    renderer, template = PromptRenderer(str(base)), load_prompt("rank_zephyr")
    tokenizer = renderer.tokenizer
    rng = random.Random(seed)
    examples = []
    for qid, docs in lists.items():
        for window in sliding_windows(min(100, len(docs)), 20, 10):
            passages = [(p.text, p.title) for p in corpus.passages(docs[window.start : window.end])]
            reply = " > ".join(f"[{i}]" for i in range(1, window.size + 1))
            words = rng.choice([20, 60, 300])  # short prompts train fast; full ones as in use
            prompt = renderer.render(build_messages(template, queries[qid], passages, words))[1]
            target = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            examples.append((prompt, target))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    started = time.perf_counter()
    for step in range(steps):
        prompt, target = examples[rng.randrange(len(examples))]
        ids = torch.tensor([prompt + target])
        labels = torch.tensor([[-100] * len(prompt) + target])
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    model.eval()
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    import os

    shared = Path(os.environ.get("DISTILLM_SHARED", data_root(REPO)))
    build_tiny_ranker(args.out, shared, args.steps)


if __name__ == "__main__":
    main()
