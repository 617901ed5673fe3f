"""vLLM's offline engine, in-process, driven request by request.

`LLM.generate` takes a fixed batch and returns when all of it is done; the sliding window
makes a query's next window depend on its previous reply, so instead requests go to the
engine (`LLM.llm_engine`) one by one with `add_request` and come back from `step()` as they
finish. The engine keeps batching continuously across queries.

Any script that builds this backend needs an `if __name__ == "__main__":` guard: vLLM's
worker processes re-import the main module.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pipeline.teacher.backends import Reply, Request

log = logging.getLogger(__name__)


class VLLMBackend:
    name = "vllm"
    supports_regex = True

    def __init__(
        self,
        model: str,
        max_model_len: int = 4096,
        dtype: str = "auto",
        seed: int = 0,
        engine_args: dict[str, Any] | None = None,
    ):
        import vllm
        from vllm import LLM

        self._vllm = vllm
        args: dict[str, Any] = {}
        if _cpu_build():
            # eager mode saves ~60 s of start-up; an explicit KV-cache size replaces vLLM's
            # CPU default of reserving 92% of the node's memory, which fails to start
            # whenever other processes hold memory
            args["enforce_eager"] = True
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                args["kv_cache_memory_bytes"] = 2 * 1024**3
        args.update(engine_args or {})
        log.info("starting vLLM %s engine for %s (max_model_len %d, %s)", vllm.__version__, model, max_model_len, args)
        self.llm = LLM(model=model, max_model_len=max_model_len, dtype=dtype, seed=seed, **args)
        self.engine = self.llm.llm_engine
        self.model = model
        self._settings = {"max_model_len": max_model_len, "dtype": dtype, "seed": seed, **args}

    def submit(self, request: Request) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        extra = {}
        if request.regex:
            from vllm.sampling_params import StructuredOutputsParams

            extra["structured_outputs"] = StructuredOutputsParams(regex=request.regex)
        params = SamplingParams(temperature=0.0, max_tokens=request.max_tokens, **extra)
        # outputs carry the id given here (the engine adds an internal suffix of its own)
        self.engine.add_request(request.key, TokensPrompt(prompt_token_ids=request.prompt_ids), params)

    def poll(self) -> list[Reply]:
        while self.engine.has_unfinished_requests():
            finished = [out for out in self.engine.step() if out.finished]
            if finished:
                return [Reply(out.request_id, out.outputs[0].text, len(out.outputs[0].token_ids)) for out in finished]
        return []

    def close(self) -> None:
        del self.engine, self.llm

    def provenance(self) -> dict[str, Any]:
        return {"backend": "vllm", "vllm": self._vllm.__version__, "model": self.model, **self._settings}


def _cpu_build() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm-cpu")
        return True
    except PackageNotFoundError:
        return False
