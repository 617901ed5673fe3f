"""The student: a mono cross-encoder (monoELECTRA) on any Hugging Face encoder.

Input `[CLS] query [SEP] passage [SEP]` (the tokenizer's own pair template), the query
truncated to `query_length` tokens and the passage to `passage_length` tokens separately,
then paired; score = Linear(hidden, 1, bias=False) on the [CLS] hidden state, no pooler
(lightning-ir's mono cross-encoder: pooling "first", linear_bias False).

Checkpoints (lightning-ir's mono layout, which `--model` / `--init` accept) are written and
read by `pipeline.student.checkpoint`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "lightning-ir-mono"  # the checkpoint layout (pipeline.student.checkpoint)
DEFAULT_BASE_MODEL = "google/electra-base-discriminator"
QUERY_LENGTH = 32
PASSAGE_LENGTH = 256


def passage_text(text: str, title: str | None = None) -> str:
    """What the student reads of a passage: `title text` when there is a title (ir_datasets' default_text)."""
    return f"{title} {text}" if title else text


class PairTokenizer:
    """Token ids of `[CLS] query [SEP] passage [SEP]` with query and passage truncated separately.

    Uses the tokenizer's `tokenizers` backend: encode each side without special tokens,
    truncate, then let the tokenizer's post-processor add the pair template (so BERT,
    ELECTRA and RoBERTa pairs are all right). The backend is copied with truncation and
    padding switched off: some tokenizer.json files carry them (all-MiniLM-L6-v2 pads and
    truncates everything to 128).
    """

    def __init__(self, tokenizer: Any, query_length: int = QUERY_LENGTH, passage_length: int = PASSAGE_LENGTH):
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"{type(tokenizer).__name__} has no `tokenizers` backend; a fast tokenizer is needed")
        self.backend = Tokenizer.from_str(backend.to_str())
        self.backend.no_truncation()
        self.backend.no_padding()
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.with_token_types = "token_type_ids" in tokenizer.model_input_names
        self.query_length = query_length
        self.passage_length = passage_length

    def encode(self, queries: list[str], passages: list[str]) -> list[tuple[list[int], list[int]]]:
        """(input ids, token type ids) of each (query, passage) pair."""
        if len(queries) != len(passages):
            raise ValueError(f"{len(queries)} queries but {len(passages)} passages")
        unique = list(dict.fromkeys(queries))  # a query usually comes with many passages: encode it once
        encoded_queries = dict(zip(unique, self.backend.encode_batch(unique, add_special_tokens=False), strict=True))
        pairs = []
        for query, passage in zip(queries, self.backend.encode_batch(passages, add_special_tokens=False), strict=True):
            q = encoded_queries[query]
            q.truncate(self.query_length)  # idempotent: the same Encoding may be truncated again
            passage.truncate(self.passage_length)
            pair = self.backend.post_process(q, passage, add_special_tokens=True)
            pairs.append((pair.ids, pair.type_ids))
        return pairs

    def collate(self, pairs: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Right-padded tensors (to a multiple of 8, which tensor cores like)."""
        width = max(len(ids) for ids, _ in pairs)
        width = -(-width // 8) * 8
        input_ids = torch.full((len(pairs), width), self.pad_id, dtype=torch.long)
        token_types = torch.zeros((len(pairs), width), dtype=torch.long)
        attention = torch.zeros((len(pairs), width), dtype=torch.long)
        for row, (ids, types) in enumerate(pairs):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            token_types[row, : len(types)] = torch.tensor(types)
            attention[row, : len(ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention}
        if self.with_token_types:
            batch["token_type_ids"] = token_types
        return batch

    def __call__(self, queries: list[str], passages: list[str]) -> dict[str, torch.Tensor]:
        return self.collate(self.encode(queries, passages))


class CrossEncoder(nn.Module):
    """Encoder + Linear(hidden, 1, bias=False) on the [CLS] hidden state."""

    def __init__(self, encoder: nn.Module, tokenizer: Any | None, settings: dict[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 1, bias=False)
        self.tokenizer = tokenizer  # None: the model scores token ids only (benchmarks)
        self.settings = settings  # format, base_model, query_length, passage_length
        self.pairs = None
        if tokenizer is not None:
            self.pairs = PairTokenizer(tokenizer, settings["query_length"], settings["passage_length"])

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(**batch).last_hidden_state[:, 0]
        # the head in fp32 even under bf16 autocast: bf16 scores would tie within a list
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return self.head(hidden.float()).squeeze(-1)

    @torch.no_grad()
    def score(self, queries: list[str], passages: list[str]) -> torch.Tensor:
        """Scores of (query, passage) pairs in one forward pass (no autocast; see pipeline.student.score)."""
        device = self.head.weight.device
        return self(**{k: v.to(device) for k, v in self.pairs(queries, passages).items()})


def load_encoder(name: str) -> nn.Module:
    """A Hugging Face encoder (folder or hub id) without the pooler that BERT-likes build."""
    from transformers import AutoModel

    try:  # BERT and RoBERTa build a pooler we never use; ELECTRA has none and no such argument
        return AutoModel.from_pretrained(name, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_pretrained(name)


def build_cross_encoder(
    base_model: str = DEFAULT_BASE_MODEL,
    query_length: int = QUERY_LENGTH,
    passage_length: int = PASSAGE_LENGTH,
    seed: int = 0,
) -> CrossEncoder:
    """A cross-encoder from a pretrained encoder (folder or hub id) with a fresh, seeded head.

    The head starts like a Hugging Face linear layer: normal(0, initializer_range).
    """
    from transformers import AutoTokenizer

    encoder = load_encoder(base_model)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    settings = {
        "format": CHECKPOINT_FORMAT,
        "base_model": base_model,
        "query_length": query_length,
        "passage_length": passage_length,
    }
    model = CrossEncoder(encoder, tokenizer, settings)
    generator = torch.Generator().manual_seed(seed)
    std = getattr(encoder.config, "initializer_range", 0.02)
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=generator) * std)
    return model
