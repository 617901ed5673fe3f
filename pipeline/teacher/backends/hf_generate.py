"""transformers `generate`, batched, for machines without vLLM.

Pending prompts are taken shortest first into batches of similar length (left-padded),
since padding masks, not arithmetic, dominate the cost of batched generation.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.teacher.backends import Reply, Request

log = logging.getLogger(__name__)


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: str, batch_size: int = 8, dtype: str = "auto", device: str | None = None, seed: int = 0):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        torch.manual_seed(seed)
        log.info(
            "loading %s with transformers %s on %s (%s)", model, transformers.__version__, self.device, torch_dtype
        )
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(model)
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.queue: list[Request] = []
        self._about = {
            "backend": "transformers",
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "model": model,
            "device": self.device,
            "dtype": str(torch_dtype),
            "batch_size": batch_size,
        }

    def submit(self, request: Request) -> None:
        self.queue.append(request)

    def poll(self) -> list[Reply]:
        if not self.queue:
            return []
        self.queue.sort(key=lambda r: len(r.prompt_ids))
        batch, self.queue = self.queue[: self.batch_size], self.queue[self.batch_size :]
        torch = self.torch
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, r in enumerate(batch):  # left padding: every prompt ends at the last column
            ids[row, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[row, width - len(r.prompt_ids) :] = 1
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=False,
                max_new_tokens=max(r.max_tokens for r in batch),
                pad_token_id=self.pad,
                eos_token_id=self.eos,
            )
        replies = []
        for row, r in enumerate(batch):
            new = out[row, width:].tolist()[: r.max_tokens]
            if self.eos in new:
                new = new[: new.index(self.eos) + 1]
            # decoded after the last prompt token, as vLLM's incremental detokenizer does:
            # decoding `new` alone would drop the leading space of its first word piece
            context = self.tokenizer.decode(r.prompt_ids[-1:], skip_special_tokens=True)
            text = self.tokenizer.decode(r.prompt_ids[-1:] + new, skip_special_tokens=True)[len(context) :]
            replies.append(Reply(r.key, text, len(new)))
        return replies

    def close(self) -> None:
        del self.model

    def provenance(self) -> dict[str, Any]:
        return dict(self._about)
