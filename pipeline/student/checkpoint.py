"""Student checkpoints: lightning-ir's mono cross-encoder layout, written and read without lightning-ir.

A checkpoint is the folder lightning-ir's `CrossEncoderModule(model_name_or_path=DIR)` loads as a
mono cross-encoder (its `MonoConfig`), so students move between this pipeline and lightning-ir,
and the released Rank-DistiLLM students (webis/monoelectra-base, webis/monoelectra-large) load here:

    config.json          the backbone's config plus model_type "mono", backbone_model_type,
                         query_length, doc_length (= our passage_length), pooling_strategy "first",
                         linear_bias false, scoring_strategy "rank"
    model.safetensors    the backbone's weights (unprefixed names) and the score layer `linear.weight` [1, hidden]
    tokenizer.json, tokenizer_config.json, ...
    provenance.json      how it was trained (written by the trainer; lightning-ir ignores it)

`load_cross_encoder` also reads the earlier `distillm-cross-encoder/1` folders (encoder +
`head.safetensors` + `cross_encoder.json`), and hub ids of either layout (downloaded once into the
Hugging Face cache). `cross_encoder_from` takes, where a base model is meant, a plain Hugging Face
encoder too (a fresh, seeded head). Other lightning-ir settings (mean pooling, a bias, the "mono"
two-logit scoring, adapters) are refused by name rather than loaded wrongly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from pipeline.student.model import CHECKPOINT_FORMAT, CrossEncoder, build_cross_encoder

log = logging.getLogger(__name__)

LEGACY_FORMAT = "distillm-cross-encoder/1"
MONO_MODEL_TYPES = ("mono", "cross-encoder")  # lightning-ir 0.0.x names of the mono cross-encoder config
# lightning-ir fields that are not the backbone's; kept out of the backbone's config
_LIGHTNING_IR_FIELDS = (
    "model_type",
    "architectures",
    "backbone_model_type",
    "query_length",
    "doc_length",
    "pooling_strategy",
    "linear_bias",
    "scoring_strategy",
    "tokenizer_pattern",
    "_bert_pool",
    "use_adapter",
    "adapter_config",
    "pretrained_adapter_name_or_path",
    "transformers_version",
)
# what this scorer computes; any other value changes the score, so such a checkpoint is refused
_SUPPORTED = {
    "pooling_strategy": ("first",),
    "linear_bias": (False,),
    "scoring_strategy": ("rank", None),
    "tokenizer_pattern": (None,),
    "_bert_pool": (False, None),
    "use_adapter": (False, None),
}
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]  # config, weights, tokenizer (no other formats)


def locate(name: str | Path) -> tuple[Path | None, str]:
    """(local folder, kind) of a model: kind 'mono' (lightning-ir layout), 'legacy' (distillm-cross-encoder/1),
    'encoder' (a plain Hugging Face encoder; a hub id's folder is left to transformers: None) or 'missing'.

    A hub id is looked at through its config.json; only a checkpoint's files are downloaded.
    """
    path = Path(name)
    if path.is_dir():
        return path, checkpoint_kind(path)
    if path.exists() or str(name).count("/") != 1 or str(name).startswith((".", "/")):
        return None, "missing"
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        config = _read_json(Path(hf_hub_download(str(name), "config.json")))
        if config.get("model_type") not in MONO_MODEL_TYPES:
            return None, "encoder"
        return Path(snapshot_download(str(name), allow_patterns=_HUB_FILES)), "mono"
    except Exception as e:  # offline, unknown repo, no access: say which and why
        raise ValueError(f"{name}: not a local folder, and the Hugging Face hub could not provide it ({e})") from None


def checkpoint_kind(path: Path) -> str:
    """'mono' (lightning-ir layout), 'legacy' (distillm-cross-encoder/1) or 'encoder' (a plain HF encoder)."""
    if (path / "cross_encoder.json").is_file():
        return "legacy"
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"{path}: no config.json: not a Hugging Face model folder")
    model_type = _read_json(config).get("model_type")
    return "mono" if model_type in MONO_MODEL_TYPES else "encoder"


def load_cross_encoder(name: str | Path) -> CrossEncoder:
    """A cross-encoder checkpoint (lightning-ir mono layout or legacy), from a folder or a hub id."""
    path, kind = locate(name)
    if kind == "missing":
        raise ValueError(f"{name}: no such model folder")
    if kind == "encoder":
        raise ValueError(
            f"{name}: a plain encoder without a trained score head, not a cross-encoder checkpoint; "
            "to start training from it, pass it to `distillm train --model`"
        )
    return _load_legacy(path) if kind == "legacy" else _load_mono(path, str(name))


def cross_encoder_from(name: str | Path, query_length: int, passage_length: int, seed: int) -> tuple[CrossEncoder, str]:
    """(model, kind) where a base model is meant: a checkpoint as it is (its head, its lengths; kind
    'mono' or 'legacy'), or a plain Hugging Face encoder with a fresh, seeded head (kind 'encoder')."""
    path, kind = locate(name)
    if kind in ("mono", "legacy"):
        return (_load_legacy(path) if kind == "legacy" else _load_mono(path, str(name))), kind
    return build_cross_encoder(str(name), query_length, passage_length, seed), "encoder"  # transformers: missing


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The checkpoint's provenance.json ({} when absent, e.g. a checkpoint from elsewhere)."""
    file = Path(path) / "provenance.json"
    return json.loads(file.read_text()) if file.exists() else {}


def mono_config(model: CrossEncoder) -> dict[str, Any]:
    """config.json of the lightning-ir mono layout: the backbone's config and MonoConfig's fields."""
    backbone = model.encoder.config.to_dict()
    backbone.pop("transformers_version", None)
    return {
        **backbone,
        "model_type": "mono",
        "architectures": [f"Mono{type(model.encoder).__name__}"],  # e.g. MonoBertModel, as lightning-ir names it
        "backbone_model_type": model.encoder.config.model_type,
        "query_length": model.settings["query_length"],
        "doc_length": model.settings["passage_length"],
        "pooling_strategy": "first",
        "linear_bias": False,
        "scoring_strategy": "rank",
        "tokenizer_pattern": None,
    }


def save_cross_encoder(model: CrossEncoder, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint folder (lightning-ir mono layout) atomically: a temporary folder renamed into place."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in model.encoder.state_dict().items()}
    weights["linear.weight"] = model.head.weight.detach().float().cpu().contiguous()
    save_file(weights, tmp / "model.safetensors", metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(mono_config(model), indent=2, sort_keys=True) + "\n")
    model.tokenizer.save_pretrained(tmp)
    if provenance is not None:
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


# --- reading -----------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


@contextlib.contextmanager
def _transformers_quiet():
    """transformers' load report would list `linear.weight` as unexpected: it is ours, read separately."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _load_mono(path: Path, name: str) -> CrossEncoder:
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    config = _read_json(path / "config.json")
    for key, allowed in _SUPPORTED.items():
        if config.get(key, allowed[0]) not in allowed:
            raise ValueError(
                f"{path / 'config.json'}: {key} {config[key]!r} is not supported (this scorer computes "
                f"{key} {allowed[0]!r}: Linear(hidden, 1, bias=False) on the first token)"
            )
    backbone_type = config.get("backbone_model_type")
    if not backbone_type:
        raise ValueError(f"{path / 'config.json'}: a lightning-ir config without backbone_model_type")
    fields = {k: v for k, v in config.items() if k not in _LIGHTNING_IR_FIELDS}
    backbone = AutoConfig.for_model(backbone_type, **fields)
    with _transformers_quiet():
        try:  # BERT and RoBERTa build a pooler that the mono model does not have; ELECTRA has no such argument
            encoder, info = AutoModel.from_pretrained(
                path, config=backbone, add_pooling_layer=False, output_loading_info=True
            )
        except TypeError:
            encoder, info = AutoModel.from_pretrained(path, config=backbone, output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"]:
        raise ValueError(
            f"{path}: model.safetensors does not hold the {backbone_type} backbone "
            f"(missing {sorted(info['missing_keys'])[:5]}, mismatched {sorted(info['mismatched_keys'])[:5]})"
        )
    linear = _mono_linear(path)
    with safe_open(linear, "pt") as f:
        weight = f.get_tensor("linear.weight")
    if tuple(weight.shape) != (1, encoder.config.hidden_size):
        raise ValueError(f"{linear}: linear.weight has shape {tuple(weight.shape)}, expected (1, hidden size)")
    provenance = read_provenance(path)
    settings = {
        "format": CHECKPOINT_FORMAT,
        "base_model": provenance.get("base_model") or name,
        "query_length": int(config.get("query_length") or 32),
        "passage_length": int(config.get("doc_length") or 512),  # MonoConfig's default
    }
    model = CrossEncoder(encoder, _load_tokenizer(path, backbone_type), settings)
    with torch.no_grad():
        model.head.weight.copy_(weight.to(model.head.weight.dtype))
    return model


def _mono_linear(path: Path) -> Path:
    """The safetensors file holding linear.weight (model.safetensors, or the shard the index names)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shard = _read_json(index).get("weight_map", {}).get("linear.weight")
        if shard:
            return path / shard
    elif (path / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(path / "model.safetensors", "pt") as f:
            if "linear.weight" in set(f.keys()):
                return path / "model.safetensors"
    raise ValueError(f"{path}: a lightning-ir mono checkpoint without linear.weight (the score layer)")


def _load_tokenizer(path: Path, backbone_type: str):
    """The backbone's own tokenizer class (lightning-ir names its wrapper class in tokenizer_config.json)."""
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name

    names = TOKENIZER_MAPPING_NAMES.get(backbone_type)
    names = (names,) if isinstance(names, str) else tuple(n for n in names or () if n)
    cls = next((c for c in map(tokenizer_class_from_name, reversed(names)) if c is not None), None)
    if cls is None:
        raise ValueError(f"{path}: no tokenizer class known for backbone {backbone_type!r}")
    return cls.from_pretrained(path)


def _load_legacy(path: Path) -> CrossEncoder:
    """A distillm-cross-encoder/1 folder: encoder, head.safetensors, cross_encoder.json."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from pipeline.student.model import load_encoder

    settings = _read_json(path / "cross_encoder.json")
    if settings.get("format") != LEGACY_FORMAT:
        raise ValueError(f"{path}: unsupported cross-encoder format {settings.get('format')!r}")
    model = CrossEncoder(load_encoder(str(path)), AutoTokenizer.from_pretrained(str(path)), settings)
    model.head.load_state_dict(load_file(path / "head.safetensors"))
    model.settings = {**settings, "format": CHECKPOINT_FORMAT}
    return model
