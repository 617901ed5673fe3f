"""Passage corpora: streaming readers (TSV, JSONL) and the memory-mapped corpus store.

MS MARCO has 8.8M passages, so a corpus is never held as Python objects. The store
keeps the text in an Arrow IPC file that is memory-mapped, and the ids as a sorted
fixed-width byte array (`ids.npy`, also memory-mapped) searched by bisection, so
looking up the text of a query's 100 candidates touches only those rows.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.errors import InputError
from pipeline.io.lines import iter_lines
from pipeline.schemas import CORPUS_SCHEMA, CORPUS_STORE_FORMAT, Passage

_ID_KEYS = ("doc_id", "docid", "_id", "id", "pid")
_TEXT_KEYS = ("text", "contents", "content", "segment", "body")
_BATCH_ROWS = 65_536


def iter_passages(path: str | Path) -> Iterator[tuple[int, Passage]]:
    """Stream (line number, Passage) from a corpus file.

    `.jsonl[.gz]`: one JSON object per line (id under doc_id/docid/_id/id/pid, text under
    text/contents/content/segment/body, optional title). Anything else is TSV:
    `doc_id<TAB>text` or `doc_id<TAB>title<TAB>text`. Empty ids or texts raise InputError.
    """
    path = Path(path)
    jsonl = path.name.endswith((".jsonl", ".jsonl.gz"))
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        passage = _parse_json_passage(path, number, line) if jsonl else _parse_tsv_passage(path, number, line)
        if not passage.doc_id or any(c.isspace() for c in passage.doc_id):
            raise InputError(path, number, f"doc id is empty or contains whitespace: {passage.doc_id!r}")
        if not passage.text.strip():
            raise InputError(path, number, f"passage {passage.doc_id!r} has empty text")
        yield number, passage


def _parse_tsv_passage(path: Path, number: int, line: str) -> Passage:
    fields = line.split("\t")
    if len(fields) == 2:
        return Passage(fields[0].strip(), fields[1])
    if len(fields) == 3:
        return Passage(fields[0].strip(), fields[2], fields[1] or None)
    raise InputError(
        path, number, f"expected 'doc_id<TAB>text' or 'doc_id<TAB>title<TAB>text', got {len(fields)} fields"
    )


def _parse_json_passage(path: Path, number: int, line: str) -> Passage:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(path, number, f"invalid JSON: {e.msg}") from None
    if not isinstance(record, dict):
        raise InputError(path, number, "expected a JSON object")
    doc_id = next((record[k] for k in _ID_KEYS if k in record), None)
    text = next((record[k] for k in _TEXT_KEYS if k in record), None)
    if doc_id is None or text is None:
        raise InputError(path, number, f"expected an id ({'/'.join(_ID_KEYS)}) and text ({'/'.join(_TEXT_KEYS)})")
    title = record.get("title") or None
    return Passage(str(doc_id).strip(), str(text), None if title is None else str(title))


def build_corpus_store(
    passages: Iterable[tuple[int, Passage]], out_dir: str | Path, source: str, progress: bool = True
) -> CorpusStore:
    """Write a corpus store from (line, Passage) records, streaming in batches.

    A doc id that occurs twice raises InputError naming both lines of `source`. The
    store is built in a temporary directory and renamed into place, so a crash never
    leaves a half-written store behind.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ids: list[bytes] = []
    lines: list[int] = []
    has_title = False
    batch: dict[str, list] = {"doc_id": [], "text": [], "title": []}
    with pa.OSFile(str(tmp / "passages.arrow"), "wb") as sink, pa.ipc.new_file(sink, CORPUS_SCHEMA) as writer:
        for number, passage in tqdm(passages, desc="corpus", unit=" passages", disable=not progress):
            batch["doc_id"].append(passage.doc_id)
            batch["text"].append(passage.text)
            batch["title"].append(passage.title)
            has_title = has_title or passage.title is not None
            ids.append(passage.doc_id.encode("utf-8"))
            lines.append(number)
            if len(batch["doc_id"]) >= _BATCH_ROWS:
                writer.write_batch(pa.record_batch(batch, schema=CORPUS_SCHEMA))
                batch = {k: [] for k in batch}
        if batch["doc_id"]:
            writer.write_batch(pa.record_batch(batch, schema=CORPUS_SCHEMA))
    if not ids:
        raise InputError(source, None, "corpus is empty")
    id_array = np.array(ids, dtype=f"S{max(map(len, ids))}")
    del ids
    order = np.argsort(id_array, kind="stable")
    sorted_ids = id_array[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        # argsort is stable, so the first of two equal ids is the earlier line
        first, second = int(lines[order[dup[0]]]), int(lines[order[dup[0] + 1]])
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(
            source,
            second,
            f"duplicate doc id {sorted_ids[dup[0]].decode()!r} (first on line {first}); {dup.size} duplicate(s) in all",
        )
    np.save(tmp / "ids.npy", sorted_ids)
    np.save(tmp / "rows.npy", order.astype(np.int64))
    meta = {"format": CORPUS_STORE_FORMAT, "count": len(lines), "source": str(source), "has_title": has_title}
    (tmp / "store.json").write_text(json.dumps(meta, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return CorpusStore(out_dir)


class UnknownDocError(KeyError):
    """Doc ids that are not in the corpus store."""

    def __init__(self, missing: list[str]):
        self.missing = missing
        shown = ", ".join(repr(m) for m in missing[:5])
        super().__init__(f"{len(missing)} doc id(s) not in the corpus: {shown}{' ...' if len(missing) > 5 else ''}")


class CorpusStore:
    """Read-only, memory-mapped access to a corpus store directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_path = self.path / "store.json"
        if not meta_path.exists():
            raise InputError(
                self.path, None, "not a corpus store (no store.json); build one with `distillm ingest corpus`"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != CORPUS_STORE_FORMAT:
            raise InputError(meta_path, None, f"unsupported corpus store format {self.meta.get('format')!r}")
        self._ids = np.load(self.path / "ids.npy", mmap_mode="r")
        self._rows = np.load(self.path / "rows.npy", mmap_mode="r")
        self._table = pa.ipc.open_file(pa.memory_map(str(self.path / "passages.arrow"))).read_all()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def has_title(self) -> bool:
        return bool(self.meta.get("has_title"))

    def rows_of(self, doc_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers of doc_ids in passages.arrow, and a mask of which ids were found."""
        width = self._ids.dtype.itemsize
        encoded = [d.encode("utf-8") for d in doc_ids]
        needles = np.array([e if len(e) <= width else b"" for e in encoded], dtype=self._ids.dtype)
        pos = np.searchsorted(self._ids, needles)
        pos_clipped = np.minimum(pos, len(self._ids) - 1)
        found = (self._ids[pos_clipped] == needles) & (needles != b"")
        return np.asarray(self._rows[pos_clipped]), found

    def missing(self, doc_ids: Sequence[str]) -> list[str]:
        """The doc ids (in input order) that are not in the store."""
        _, found = self.rows_of(doc_ids)
        return [d for d, ok in zip(doc_ids, found, strict=True) if not ok]

    def passages(self, doc_ids: Sequence[str]) -> list[Passage]:
        """The passages for doc_ids, in the given order; UnknownDocError if any is missing."""
        rows, found = self.rows_of(doc_ids)
        if not found.all():
            raise UnknownDocError([d for d, ok in zip(doc_ids, found, strict=True) if not ok])
        taken = self._table.take(pa.array(rows, type=pa.int64()))
        return [
            Passage(d, t, ti)
            for d, t, ti in zip(
                taken.column("doc_id").to_pylist(),
                taken.column("text").to_pylist(),
                taken.column("title").to_pylist(),
                strict=True,
            )
        ]

    def iter_batches(self, batch_size: int = _BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Stream the corpus in file order as Arrow record batches (for indexers)."""
        yield from self._table.to_batches(max_chunksize=batch_size)
