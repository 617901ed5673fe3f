"""The teacher's settings, each default written once, here.

`TeacherSettings` is what determines the teacher's rankings: a resumed run must use the same,
and only replies given under the same are reused. `TeacherJob` is one `distillm rerank` with
the teacher: the rankings' settings (defaults: TeacherSettings's), the backend and how it runs,
the files, the scale-out and the budget (`pipeline.teacher.job.rerank_with_teacher` runs it).
`Prices` are what a model's tokens cost.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RANKINGS = ("full", "first")
BACKENDS = "vllm | openai | transformers | replay:LOG"


@dataclass(frozen=True)
class TeacherSettings:
    """What determines the teacher's rankings; a resumed run must use the same."""

    model: str
    prompt: str = "rank_zephyr"  # a template name in prompts/ or a .toml path
    depth: int = 100  # candidates re-ranked per query
    window: int = 20  # passages per window
    stride: int = 10  # positions each next window moves up
    max_words: int = 300  # words per passage before adaptive shrinking
    max_model_len: int = 4096  # context of the model: prompt + reply must fit
    max_new_tokens: int | None = None  # default: the token count of a full permutation + 2
    constrained: bool = False  # regex-constrained decoding of "[i] > [j] > ..."
    # "full": the model generates the permutation; "first": FIRST, one generated token, the
    # window ordered by its identifiers' log-probabilities as that token (pipeline.teacher.driver)
    ranking: str = "full"

    def __post_init__(self) -> None:
        if self.ranking not in RANKINGS:
            raise ValueError(f"unknown ranking {self.ranking!r}: choose one of {RANKINGS}")
        if self.ranking == "first" and self.constrained:
            raise ValueError("--constrained constrains a generated permutation; --ranking first generates none")


@dataclass(frozen=True)
class Prices:
    """Per million tokens, prompt and completion apart, as providers quote them."""

    prompt: float
    completion: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


@dataclass(frozen=True)
class TeacherJob:
    """One teacher run over a first-stage run: its inputs and outputs, the rankings' settings, the
    model backend, the scale-out and the budget."""

    run: Path  # the first-stage TREC run
    queries: str  # a queries file or irds:<id>
    corpus: Path  # the corpus store
    out: Path  # the teacher's TREC run
    log: Path | None = None  # the reply log (default: OUT.log.jsonl); an existing one is resumed
    stats: Path | None = None  # stats + provenance JSON (default: OUT.stats.json)
    tag: str = "teacher"  # run tag
    max_queries: int = 0  # only the first N queries of the run (0: all)
    # the rankings (TeacherSettings): model, prompt, window
    model: str | None = None  # model folder or hub id (vllm, transformers); model name (openai)
    prompt: str = TeacherSettings.prompt
    depth: int = TeacherSettings.depth
    window: int = TeacherSettings.window
    stride: int = TeacherSettings.stride
    max_words: int = TeacherSettings.max_words
    max_model_len: int = TeacherSettings.max_model_len
    max_new_tokens: int | None = TeacherSettings.max_new_tokens
    constrained: bool = TeacherSettings.constrained
    ranking: str = TeacherSettings.ranking
    # the backend and how it runs (none of it changes a reply)
    backend: str = "vllm"  # BACKENDS
    tokenizer: str | None = None  # chat template and token counts (default: the model's)
    dtype: str = "auto"  # model dtype (auto: bf16 on GPU, fp32 on CPU)
    batch_size: int = 8  # transformers: prompts per generate call
    continuous_batching: bool = False  # transformers: paged KV cache, no padding
    base_url: str = "http://127.0.0.1:8000/v1"  # openai: server URL
    concurrency: int = 32  # openai: parallel requests
    engine_args: tuple[str, ...] = ()  # vllm: extra LLM() arguments, KEY=VALUE (JSON value)
    early: bool = True  # vllm: submit a window once the reply before it has settled its head
    reuse: tuple[Path, ...] = ()  # earlier reply logs whose replies answer identical prompts
    # scale-out: a shard of the queries, or blocks of queries on Ray actors
    shard: str | None = None  # I/N: every N-th query from the I-th (0-based)
    engine: str = "local"  # local | ray
    ray_address: str | None = None  # default: start a local Ray
    ray_actors: int = 1  # teacher actors, one engine each
    ray_gpus_per_actor: float = 0  # GPUs per actor (tensor parallel size)
    ray_cpus_per_actor: float = 1  # CPUs reserved per actor
    block_size: int = 100  # queries per block
    # cost
    price_in: float | None = None  # per million prompt tokens
    price_out: float | None = None  # per million completion tokens (reasoning included)
    max_cost: float | None = None  # stop submitting windows once the run's cost reaches this
    progress: bool = True

    @property
    def replay(self) -> Path | None:
        """The reply log (or folder of them) of `replay:LOG`; None for a model backend."""
        return Path(self.backend.removeprefix("replay:")) if self.backend.startswith("replay:") else None

    @property
    def chat(self) -> bool:
        """An OpenAI-compatible server without a tokenizer: the window's messages go to /chat/completions."""
        return self.backend == "openai" and not self.tokenizer

    def prices(self) -> Prices | None:
        """`--price-in` / `--price-out` (per million tokens; one given, the other is 0)."""
        if self.price_in is None and self.price_out is None:
            if self.max_cost is not None:
                raise ValueError("--max-cost needs the prices: --price-in and --price-out (per million tokens)")
            return None
        if min(self.price_in or 0.0, self.price_out or 0.0) < 0:
            raise ValueError("--price-in and --price-out cannot be negative")
        return Prices(self.price_in or 0.0, self.price_out or 0.0)

    def settings(self, replayed_model: str | None = None) -> TeacherSettings:
        """The rankings' settings; the model of a replay is the one the replayed log names."""
        return TeacherSettings(
            model=self.model or replayed_model or self.backend,
            prompt=self.prompt,
            depth=self.depth,
            window=self.window,
            stride=self.stride,
            max_words=self.max_words,
            max_model_len=self.max_model_len,
            max_new_tokens=self.max_new_tokens,
            constrained=self.constrained,
            ranking=self.ranking,
        )

    def backend_options(self) -> dict[str, Any]:
        """The options of the model backend `backend` names."""
        if self.backend == "vllm":
            engine_args = {}
            for item in self.engine_args:
                key, _, value = item.partition("=")
                try:
                    engine_args[key] = json.loads(value)
                except json.JSONDecodeError:
                    engine_args[key] = value
            return {
                "model": self.model,
                "max_model_len": self.max_model_len,
                "dtype": self.dtype,
                "engine_args": engine_args,
            }
        if self.backend == "transformers":
            return {
                "model": self.model,
                "batch_size": self.batch_size,
                "dtype": self.dtype,
                "continuous": self.continuous_batching,
            }
        if self.backend == "openai":
            # without a tokenizer there is no prompt text to send: the chat endpoint takes the messages
            return {"model": self.model, "base_url": self.base_url, "concurrency": self.concurrency, "chat": self.chat}
        return {}
