"""transformers generation for machines without vLLM, in one of two modes.

padded (default): pending prompts are taken shortest first into `generate` batches of
  similar length (left-padded), since padding masks, not arithmetic, dominate the cost of
  batched generation. Each batch runs to its longest reply.
continuous (`continuous=True`, `--continuous-batching`): transformers' continuous batching
  (a paged KV cache, no padding). Each prompt joins the running batch when it is
  submitted and leaves it when its reply ends, so a query's next window starts while other
  windows are still decoding, as on vLLM. Greedy replies are the same as in padded mode.

FIRST requests (one token, `--ranking first`) always go in padded batches (in either mode):
there is no decoding to batch continuously. Their identifiers' log-probabilities come from
the first generation step's raw logits.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.teacher.backends import Reply, Request

log = logging.getLogger(__name__)

CPU_KV_CACHE_BYTES = 2 * 1024**3  # continuous mode's memory on a CPU (transformers would take 90% of the RAM)
PAGE_SIZE = 256  # tokens per KV-cache page (transformers' default)


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model: str,
        batch_size: int = 8,
        dtype: str = "auto",
        device: str | None = None,
        seed: int = 0,
        continuous: bool = False,
    ):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        torch.manual_seed(seed)
        log.info("loading %s with transformers %s on %s (%s)", model, transformers.__version__, device, torch_dtype)
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(device)
        self._setup(loaded, AutoTokenizer.from_pretrained(model), model, batch_size, continuous)

    @classmethod
    def from_model(
        cls, model: Any, tokenizer: Any, name: str, batch_size: int = 8, continuous: bool = False
    ) -> TransformersBackend:
        """Wrap a causal LM already in memory, on its device (a notebook's model, or the GPU
        benchmark's model built from a config); `name` is the model named in provenance."""
        backend = cls.__new__(cls)
        backend._setup(model, tokenizer, name, batch_size, continuous)
        return backend

    def _setup(self, model: Any, tokenizer: Any, name: str, batch_size: int, continuous: bool) -> None:
        import torch
        import transformers

        self.torch = torch
        self.model = model.eval()
        self.device = str(model.device)
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.queue: list[Request] = []
        self.manager: Any = None  # continuous mode: transformers' ContinuousBatchingManager
        self.pending: dict[str, Request] = {}  # continuous mode: submitted, not yet returned
        if continuous:
            from transformers import GenerationConfig

            config = GenerationConfig(do_sample=False, max_new_tokens=256, eos_token_id=self.eos, pad_token_id=self.pad)
            self.manager = self.model.init_continuous_batching(
                generation_config=config, continuous_batching_config=_cache_config(self.model)
            )
            self.manager.start()
        self._about = {
            "backend": "transformers",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "model": name,
            "device": self.device,
            "dtype": str(model.dtype),
            "batch_size": None if continuous else batch_size,
            "batching": "continuous" if continuous else "padded",
        }

    def submit(self, request: Request) -> None:
        if self.manager is None or request.identifiers:
            self.queue.append(request)
            return
        self.pending[request.key] = request
        added = self.manager.add_request(
            list(request.prompt_ids), request_id=request.key, max_new_tokens=request.max_tokens
        )
        if added is None:  # the manager stopped taking requests (it logged why)
            raise RuntimeError(f"transformers continuous batching refused window {request.key!r}")

    def poll(self) -> list[Reply]:
        if self.queue:
            return self._poll_padded()
        if self.manager is not None:
            return self._poll_continuous()
        return []

    def _poll_padded(self) -> list[Reply]:
        """Generate the shortest pending prompts as one left-padded batch."""
        self.queue.sort(key=lambda r: len(r.prompt_ids))
        batch, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
        torch = self.torch
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, r in enumerate(batch):  # left padding: every prompt ends at the last column
            ids[row, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[row, width - len(r.prompt_ids) :] = 1
        first = any(r.identifiers for r in batch)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=False,
                max_new_tokens=max(r.max_tokens for r in batch),
                pad_token_id=self.pad,
                eos_token_id=self.eos,
                output_logits=first,  # raw logits of each step, before any logits processor
                return_dict_in_generate=True,
            )
        # FIRST: log-probabilities of the first generated token
        step0 = torch.log_softmax(out.logits[0].float(), dim=-1).cpu() if first else None
        return [
            self._reply(r, out.sequences[row, width:].tolist(), None if step0 is None else step0[row])
            for row, r in enumerate(batch)
        ]

    def _poll_continuous(self) -> list[Reply]:
        """Block until at least one submitted request has finished; return all finished ones."""
        replies: list[Reply] = []
        timeout = 1.0
        while self.pending:
            result = self.manager.get_result(timeout=timeout)
            if result is None:
                if replies:
                    break
                if not self.manager.is_running():
                    raise RuntimeError(
                        f"transformers continuous batching stopped with {len(self.pending)} requests left"
                    )
                continue
            if result.error is not None:
                raise RuntimeError(
                    f"transformers continuous batching failed on window {result.request_id}: {result.error}"
                )
            if not result.is_finished() or result.request_id not in self.pending:
                continue
            replies.append(self._reply(self.pending.pop(result.request_id), list(result.generated_tokens)))
            timeout = 0  # then take whatever else has finished, without waiting
        return replies

    def _reply(self, r: Request, generated: list[int], first_logprobs: Any = None) -> Reply:
        new = generated[: r.max_tokens]
        if self.eos in new:
            new = new[: new.index(self.eos) + 1]
        # decoded after the last prompt token, as vLLM's incremental detokenizer does:
        # decoding `new` alone would drop the leading space of its first word piece
        context = self.tokenizer.decode(r.prompt_ids[-1:], skip_special_tokens=True)
        text = self.tokenizer.decode(r.prompt_ids[-1:] + new, skip_special_tokens=True)[len(context) :]
        logprobs = None
        if r.identifiers:
            logprobs = {name: float(first_logprobs[i]) for name, i in zip(r.identifiers, r.identifier_ids, strict=True)}
        return Reply(r.key, text, len(new), logprobs=logprobs)

    def close(self) -> None:
        if self.manager is not None:
            self.manager.stop(block=True)  # frees the KV cache
            self.manager.destroy()
            self.manager = None
        del self.model

    def provenance(self) -> dict[str, Any]:
        return dict(self._about)


def _cache_config(model: Any) -> Any:
    """Continuous batching's memory: on a GPU, transformers' own sizing (90% of the free GPU
    memory). On a CPU that sizing would take 90% of the machine's RAM (and the process gets
    killed when other processes need some), so there the KV cache, its attention masks and
    batch tensors get CPU_KV_CACHE_BYTES together, as vLLM's CPU backend here. transformers
    counts a CPU's free memory as total RAM minus this process's resident size."""
    import psutil
    from transformers import ContinuousBatchingConfig

    if model.device.type != "cpu":
        return ContinuousBatchingConfig(page_size=PAGE_SIZE)
    free = psutil.virtual_memory().total - psutil.Process().memory_info().rss
    return ContinuousBatchingConfig(page_size=PAGE_SIZE, max_memory_percent=min(0.9, CPU_KV_CACHE_BYTES / free))
