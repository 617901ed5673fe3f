"""The corpus store: passages kept memory-mapped, built from TSV/JSONL files or `irds:<id>`.

MS MARCO has 8.8M passages, so a corpus is never held as Python objects. The store (a
directory, built by `distillm ingest corpus`) keeps the text in an Arrow IPC file that is
memory-mapped, and the ids as a sorted fixed-width byte array searched by bisection, so
looking up the text of a query's 100 candidates touches only those rows:

    passages.arrow  Arrow IPC file, columns CORPUS_SCHEMA (doc_id, text, title), in source order
    ids.npy         the doc ids as sorted fixed-width bytes (memory-mapped, binary search)
    rows.npy        int64, the row in passages.arrow of each sorted id
    store.json      format version, passage count, source, whether titles exist

Ordering: passages stay in the order of their source (`iter_batches` streams them so, for
indexers); lookups (`passages`) return them in the order asked for. A doc id occurs once.
"""

from __future__ import annotations

import json
import os
import shutil
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.contract.irds import irds_dataset, irds_records, is_irds
from pipeline.contract.lines import first_key, iter_lines, json_object
from pipeline.infra.errors import InputError

DOC_ID, TEXT, TITLE = "doc_id", "text", "title"
CORPUS_SCHEMA = pa.schema(
    [
        pa.field(DOC_ID, pa.string(), nullable=False),
        pa.field(TEXT, pa.string(), nullable=False),
        pa.field(TITLE, pa.string(), nullable=True),
    ]
)
CORPUS_STORE_FORMAT = "distillm-corpus/1"

_ID_KEYS = ("doc_id", "docid", "_id", "id", "pid")
_TEXT_KEYS = ("text", "contents", "content", "segment", "body")
_BATCH_ROWS = 65_536
_SCALAR_LOOKUPS = 1_000  # up to this many rows per lookup, read row by row; more: one take per batch


@dataclass(frozen=True, slots=True)
class Passage:
    doc_id: str
    text: str
    title: str | None = None


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
    record = json_object(path, number, line)
    doc_id, text = first_key(record, _ID_KEYS), first_key(record, _TEXT_KEYS)
    if doc_id is None or text is None:
        raise InputError(path, number, f"expected an id ({'/'.join(_ID_KEYS)}) and text ({'/'.join(_TEXT_KEYS)})")
    title = record.get("title") or None
    return Passage(str(doc_id).strip(), str(text), None if title is None else str(title))


def load_passages(spec: str | Path) -> Iterator[tuple[int, Passage]]:
    """Stream (line or record number, Passage) from a corpus file or `irds:` id."""
    spec = str(spec)
    if not is_irds(spec):
        yield from iter_passages(spec)
        return
    dataset = irds_dataset(spec)

    def records() -> Iterator[tuple[int, Passage]]:
        for number, doc in enumerate(dataset.docs_iter(), start=1):
            title = getattr(doc, "title", None) or None
            yield number, Passage(str(doc.doc_id), doc.text, title)

    yield from irds_records(spec, "documents", records)


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
    # the ids as fixed-width bytes, one array per batch (~8 bytes an MS MARCO id, not a Python
    # object each), and each passage's line: 1/4 of the memory of lists at 8.8M passages
    id_parts: list[np.ndarray] = []
    lines = array("q")
    has_title = False
    batch: dict[str, list] = {name: [] for name in CORPUS_SCHEMA.names}

    def flush() -> None:
        writer.write_batch(pa.record_batch(batch, schema=CORPUS_SCHEMA))
        id_parts.append(np.array([d.encode("utf-8") for d in batch[DOC_ID]], dtype=bytes))
        for values in batch.values():
            values.clear()

    with pa.OSFile(str(tmp / "passages.arrow"), "wb") as sink, pa.ipc.new_file(sink, CORPUS_SCHEMA) as writer:
        for number, passage in tqdm(passages, desc="corpus", unit=" passages", disable=not progress):
            batch[DOC_ID].append(passage.doc_id)
            batch[TEXT].append(passage.text)
            batch[TITLE].append(passage.title)
            has_title = has_title or passage.title is not None
            lines.append(number)
            if len(batch[DOC_ID]) >= _BATCH_ROWS:
                flush()
        if batch[DOC_ID]:
            flush()
    if not id_parts:
        raise InputError(source, None, "corpus is empty")
    width = max(part.dtype.itemsize for part in id_parts)
    id_array = np.concatenate([part.astype(f"S{width}") for part in id_parts])
    id_parts.clear()
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
        if not len(self._rows):
            raise InputError(self.path, None, "the corpus store holds no passages")
        # Rows are read batch by batch: `Table.take` concatenates each chunked column first,
        # which copies the whole corpus for every lookup (seconds per query at 8.8M passages).
        self._batches = self._table.to_batches()
        self._columns = [batch.columns for batch in self._batches]  # doc_id, text, title (CORPUS_SCHEMA)
        self._batch_starts = np.cumsum([0] + [b.num_rows for b in self._batches])

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
        if len(needles) > 64:  # sorted needles: each bisection starts where the last one ended (~2x faster)
            order = np.argsort(needles, kind="stable")
            pos = np.empty(len(needles), dtype=np.intp)
            pos[order] = np.searchsorted(self._ids, needles[order])
        else:
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
        batch_of = np.searchsorted(self._batch_starts, rows, side="right") - 1
        local = rows - self._batch_starts[batch_of]
        if len(rows) <= _SCALAR_LOOKUPS:  # a query's candidates: a few microseconds per row
            return [self._passage(b, i) for b, i in zip(batch_of.tolist(), local.tolist(), strict=True)]
        passages: list[Passage | None] = [None] * len(rows)
        order = np.argsort(batch_of, kind="stable")
        cuts = np.flatnonzero(np.diff(batch_of[order])) + 1
        for group in np.split(order, cuts):  # many rows (export): one take per record batch
            taken = self._batches[int(batch_of[group[0]])].take(pa.array(local[group], type=pa.int64()))
            columns = (taken.column(name).to_pylist() for name in CORPUS_SCHEMA.names)
            for position, d, t, ti in zip(group.tolist(), *columns, strict=True):
                passages[position] = Passage(d, t, ti)
        return passages  # type: ignore[return-value]

    def _passage(self, batch: int, row: int) -> Passage:
        columns = self._columns[batch]
        return Passage(columns[0][row].as_py(), columns[1][row].as_py(), columns[2][row].as_py())

    def iter_batches(self, batch_size: int = _BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Stream the corpus in file order as Arrow record batches (for indexers)."""
        yield from self._table.to_batches(max_chunksize=batch_size)
