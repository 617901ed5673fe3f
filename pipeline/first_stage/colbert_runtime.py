"""colbert-ai 0.2.22 in this process: made usable in the vLLM environment (compiled extensions,
transformers 5), fed from our corpus store, and described (versions, device).

- C++ extensions (`compile_extensions`): colbert-ai compiles 4 of them for CPU on first use
  (~40 s each, one after the other); we build them side by side with the same arguments
  first, in TORCH_EXTENSIONS_DIR, which defaults to `<repo>/.cache/torch_extensions`.
- encoding once (`encode_each_passage_once`): for k-means colbert-ai encodes a sample of
  16 sqrt(120 N) passages, which is every passage below ~30k, then encodes every passage
  again to index it. While indexing such a collection we hand the index pass the sample's
  embeddings (the same passages, encoded by the same call): the index is bit-identical and
  takes about half the time.
- transformers 5 (`install_post_init_fix`, applied on import of this module): colbert-ai's
  HF_ColBERT never calls `post_init()`, which transformers 5 needs to finish building a
  model; loading failed with "'HF_ColBERT' object has no attribute 'all_tied_weights_keys'".
  We make the class colbert-ai creates call it at the end of `__init__`, without editing
  the installed library.

- our store as colbert-ai's collection (`StorePassages`: PLAID passage id = store row) and the
  index's passage ids back to doc ids (`DocIds`).

Import this module before colbert-ai is used (the ColBERT modules of this package do).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np

from pipeline.contract.corpus import CorpusStore

log = logging.getLogger(__name__)

# colbert-ai's CPU extensions: name -> source inside the colbert package, with the flags it uses.
EXTENSIONS = {
    "segmented_maxsim_cpp": "modeling/segmented_maxsim.cpp",
    "decompress_residuals_cpp": "search/decompress_residuals.cpp",
    "filter_pids_cpp": "search/filter_pids.cpp",
    "segmented_lookup_cpp": "search/segmented_lookup.cpp",
}
EXTENSION_CFLAGS = ["-O3"]


# ------------------------------------------------------------------ compiled extensions


def _default_extensions_dir() -> Path:
    """`<repo>/.cache/torch_extensions` for a source checkout, else `./.cache/torch_extensions`."""
    repo = Path(__file__).resolve().parents[2]
    return (repo if (repo / "pyproject.toml").exists() else Path.cwd()) / ".cache" / "torch_extensions"


# torch reads this when an extension is loaded; set it before colbert-ai loads any.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(_default_extensions_dir()))


def extensions_dir() -> Path:
    """Where compiled extensions are cached (TORCH_EXTENSIONS_DIR)."""
    return Path(os.environ["TORCH_EXTENSIONS_DIR"])


def compile_extensions() -> None:
    """Build (or load, when cached) colbert-ai's 4 CPU extensions, all at once.

    The arguments are exactly colbert-ai's, so its own `load()` calls later find them built
    (torch hashes sources and flags). Nothing to do on a GPU machine: colbert-ai's GPU code
    compiles its CUDA extensions itself. Daemon threads: a compile blocked on a stale lock
    file must not keep the interpreter from exiting after the watchdog gave up on it.
    """
    import colbert
    import torch

    if torch.cuda.is_available():
        return
    from torch.utils.cpp_extension import load

    root = Path(colbert.__file__).resolve().parent
    errors: dict[str, BaseException] = {}

    def build(name: str, source: str) -> None:
        try:
            load(name=name, sources=[str(root / source)], extra_cflags=EXTENSION_CFLAGS)
        except BaseException as e:  # reported below, in the caller's thread
            errors[name] = e

    threads = [
        threading.Thread(target=build, args=item, name=f"compile {item[0]}", daemon=True) for item in EXTENSIONS.items()
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        name, error = next(iter(errors.items()))
        raise RuntimeError(f"cannot build colbert-ai's C++ extension {name} in {extensions_dir()}: {error}") from error
    log.debug("colbert-ai extensions ready in %.1f s (%s)", time.perf_counter() - started, extensions_dir())


@contextlib.contextmanager
def encode_each_passage_once(collection_size: int) -> Iterator[None]:
    """While active, colbert-ai's indexer encodes a collection of `collection_size` passages once, not twice.

    colbert-ai's `CollectionIndexer` calls `CollectionEncoder.encode_passages` for its k-means
    sample, then for each chunk of the collection. When the sample is the whole collection
    and the one chunk is that same list of passages, the second call returns the first
    call's result instead of computing it again. Anything else (a sample of a large
    collection, several chunks) is encoded as usual, so no sample of MS MARCO is kept in memory.
    """
    from colbert.indexing import collection_indexer

    original = collection_indexer.CollectionEncoder

    class EncodeOnce(original):
        def encode_passages(self, passages):
            kept = getattr(self, "_kept", None)
            self._kept = None
            if kept is not None and kept[0] == passages:
                log.info("reusing the k-means sample's embeddings of all %d passages", len(passages))
                return kept[1]
            result = original.encode_passages(self, passages)
            if len(passages) == collection_size:
                self._kept = (list(passages), result)
            return result

    collection_indexer.CollectionEncoder = EncodeOnce
    try:
        yield
    finally:
        collection_indexer.CollectionEncoder = original


# ------------------------------------------------------------------ transformers 5 fix

_HF_COLBERT = "colbert.modeling.hf_colbert"
# Modules that did `from colbert.modeling.hf_colbert import class_factory` and hold their own reference.
_CLASS_FACTORY_USERS = (
    "colbert.modeling.base_colbert",
    "colbert.modeling.tokenization.query_tokenization",
    "colbert.modeling.tokenization.doc_tokenization",
)


def install_post_init_fix() -> None:
    """Make colbert-ai's HF_ColBERT call `self.post_init()` at the end of `__init__` (transformers >= 5).

    colbert-ai builds HF_ColBERT in `hf_colbert.class_factory()` as a subclass of the
    encoder's PreTrainedModel; transformers 5 finishes a model (tied-weight bookkeeping
    such as `all_tied_weights_keys`) in `post_init()`, which HF_ColBERT never calls. We wrap
    `class_factory` so the class it returns is a subclass whose `__init__` calls it; the
    loaded weights and rankings are those of transformers 4.57. Applied now if colbert-ai is
    imported, else the moment `colbert.modeling.hf_colbert` is imported (an import hook), so
    it holds for any use of colbert-ai in this process, ours or not. Idempotent.
    """
    module = sys.modules.get(_HF_COLBERT)
    if module is not None:
        _patch_class_factory(module)
    elif not any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def _patch_class_factory(module) -> None:
    original = module.class_factory
    if getattr(original, "calls_post_init", False):
        return
    if int(module.transformers.__version__.split(".")[0]) < 5:
        return  # transformers 4 finishes models without post_init(): leave colbert-ai as it is

    def class_factory(name_or_path):
        base = original(name_or_path)

        class HF_ColBERT(base):
            def __init__(self, config, colbert_config):
                super().__init__(config, colbert_config)
                self.post_init()

        HF_ColBERT.__qualname__ = f"{base.__qualname__}+post_init"
        return HF_ColBERT

    class_factory.calls_post_init = True
    class_factory.original = original
    class_factory.__doc__ = original.__doc__
    module.class_factory = class_factory
    for name in _CLASS_FACTORY_USERS:
        user = sys.modules.get(name)
        if user is not None and getattr(user, "class_factory", None) is original:
            user.class_factory = class_factory


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds `colbert.modeling.hf_colbert` as usual and patches it right after it executes."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _HF_COLBERT:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        execute = spec.loader.exec_module

        def exec_module(module) -> None:
            execute(module)
            _patch_class_factory(module)

        spec.loader.exec_module = exec_module  # this module's own loader instance
        return spec


install_post_init_fix()


def post_init_fix_applied() -> bool:
    """Whether colbert-ai's class factory is the patched one (imports colbert-ai)."""
    import colbert.modeling.hf_colbert as hf_colbert

    return bool(getattr(hf_colbert.class_factory, "calls_post_init", False))


def stale_lock_hint() -> str:
    """For a StallError: the compile lock files that exist (a killed compile leaves them, and torch waits on them)."""
    locks = sorted(extensions_dir().glob("*/lock"))
    if not locks:
        return ""
    return (
        f"; compile lock files exist: {', '.join(map(str, locks))} "
        "(left by a killed compile? delete them if no other process is compiling)"
    )


def runtime_versions() -> dict[str, str | bool | None]:
    """Versions of colbert-ai and what it runs on, and whether the transformers-5 fix is active."""
    versions: dict[str, str | bool | None] = {"python": sys.version.split()[0]}
    for dist in ("colbert-ai", "torch", "transformers", "faiss-cpu", "faiss-gpu"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    versions["post_init_fix"] = post_init_fix_applied()
    return versions


# ------------------------------------------------------------------ our store, colbert-ai's collection


class StorePassages:
    """The store's passages in row order (PLAID passage id = row), streamed batch by batch.

    colbert-ai only iterates a collection front to back (twice) and asks its length, so
    the texts of MS MARCO's 8.8M passages never exist as Python strings all at once.
    """

    def __init__(self, store: CorpusStore):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator[str]:
        for batch in self.store.iter_batches(8192):
            texts, titles = batch.column("text").to_pylist(), batch.column("title").to_pylist()
            for text, title in zip(texts, titles, strict=True):
                yield text if title is None else f"{title} {text}"

    def __deepcopy__(self, memo: dict) -> StorePassages:
        return self  # colbert-ai's config export deep-copies its fields; the store is read-only


def doc_ids_in_row_order(store: CorpusStore) -> np.ndarray:
    ids = [d.encode("utf-8") for batch in store.iter_batches() for d in batch.column("doc_id").to_pylist()]
    return np.array(ids, dtype=f"S{max(map(len, ids))}")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def device_name() -> str:
    import torch

    return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


class DocIds:
    """PLAID passage id -> doc id, from the index's memory-mapped DOC_IDS."""

    def __init__(self, path: Path):
        self.ids = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, pid: int) -> str:
        return bytes(self.ids[pid]).decode("utf-8")
