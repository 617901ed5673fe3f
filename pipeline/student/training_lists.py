"""Training lists: for each query, a list of passages with targets (gains, higher = better).

Stage 1 (`RelevanceLists`, InfoNCE pre-fine-tuning): one relevant passage from the qrels
(relevance >= threshold) and hard negatives sampled from the query's first-stage top
`depth` (lightning-ir's "single_relevant" sampling). Positives are any such judged passage
(`positives="qrels"`: each must be in the corpus, as in MS MARCO), or only those in the
run's top `depth` (`"run"`: for a corpus of the run's passages only; lightning-ir does the
same when the run file carries the text). A passage judged relevant at any level (> 0) is
never a negative. A query is skipped, and counted, when it has no relevant passage or no
negative.

Stage 2 (`TeacherLists`, distillation): the teacher's top `depth` from our Parquet dataset
(schema in `pipeline.dataset`) or a published Rank-DistiLLM layout (lightning-ir run tables,
the Hugging Face parquet copies, TREC runs: `pipeline.student.teacher_rankings`), `list_size`
of them sampled per query (`random`: a random subset kept in teacher order; `top`: the
teacher's top list_size). Targets are the teacher's ranks as gains, `depth - rank + 1`.

A query with fewer candidates than the list size is used with what it has: its list is
shorter and the batch pads it with a mask that every loss honours (lightning-ir drops such
queries instead). Sampling is a pure function of (seed, epoch, query index), so a resumed
run sees exactly the lists an uninterrupted one would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.contract.corpus import CorpusStore
from pipeline.contract.dataset import DOC_ID, QID, QUERY, TEACHER_RANK, TEXT
from pipeline.contract.qrels import load_qrels
from pipeline.contract.queries import load_queries
from pipeline.contract.rerank_inputs import check_run_references
from pipeline.contract.run import ranked_lists, read_trec_run
from pipeline.infra.errors import InputError
from pipeline.student.model import passage_text
from pipeline.student.teacher_rankings import read_teacher_rankings
from pipeline.student.train_settings import STAGE_DEFAULTS

log = logging.getLogger(__name__)

SAMPLINGS = ("random", "top")


@dataclass(frozen=True)
class TrainList:
    """One query's training list: passages and their targets (gains, higher = better)."""

    qid: str
    query: str
    doc_ids: tuple[str, ...]
    targets: tuple[float, ...]


def epoch_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream for query `index` in `epoch`: independent of batching and resumption."""
    return np.random.default_rng([seed, epoch, index])


class CorpusTexts:
    """Passage text from a corpus store (UnknownDocError for ids not in it)."""

    def __init__(self, corpus: CorpusStore):
        self.corpus = corpus

    def __call__(self, doc_ids: list[str]) -> list[str]:
        return [passage_text(p.text, p.title) for p in self.corpus.passages(doc_ids)]


def _check_in_corpus(corpus: CorpusStore, doc_ids: np.ndarray, qids: np.ndarray, source: str | Path) -> None:
    unique, first = np.unique(doc_ids.astype(str), return_index=True)
    missing = [str(d) for d in corpus.missing([str(d) for d in unique])]
    if missing:
        where = first[np.searchsorted(unique, missing[0])]
        raise InputError(
            source,
            None,
            f"doc {missing[0]!r} (query {str(qids[where])!r}) is not in the corpus {corpus.path} "
            f"({len(missing)} unknown doc ids)",
        )


# --- stage 2: the teacher's rankings -------------------------------------------------------


class TeacherLists:
    """Each query's teacher ranking (top `depth`), held as flat arrays with per-query offsets."""

    def __init__(
        self,
        path: str | Path,
        depth: int = STAGE_DEFAULTS["distill"]["depth"],
        list_size: int = STAGE_DEFAULTS["distill"]["list_size"],
        sampling: str = "random",
        max_queries: int = 0,
        corpus: CorpusStore | None = None,
        queries: str | Path | None = None,
    ):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, not {sampling!r}")
        self.path, self.depth, self.list_size, self.sampling = Path(path), depth, list_size, sampling
        # our export, a lightning-ir run table, the published parquet copies or a TREC run
        frame, self.metadata = read_teacher_rankings(path, queries)
        with_text = TEXT in frame
        self.rows_read = len(frame)
        codes, qids = pd.factorize(frame[QID], sort=False)  # queries in file order
        if max_queries:
            frame, codes, qids = frame[codes < max_queries], codes[codes < max_queries], qids[:max_queries]
        order = np.lexsort((frame[TEACHER_RANK].to_numpy(), codes))
        frame = frame.iloc[order].reset_index(drop=True)
        codes = codes[order]
        for key in (DOC_ID, TEACHER_RANK):
            dup = frame.duplicated([QID, key])
            if dup.any():
                row = frame[dup].iloc[0]
                raise InputError(path, None, f"query {row['qid']!r} has {key} {row[key]!r} twice")
        if (frame[TEACHER_RANK] < 1).any():
            raise InputError(path, None, "teacher_rank must be >= 1 (1 = best)")
        keep = (frame[TEACHER_RANK] <= depth).to_numpy()
        frame, codes = frame[keep].reset_index(drop=True), codes[keep]
        self.qids = np.asarray(qids, dtype=object)
        self.queries = frame.groupby(codes, sort=True)[QUERY].first().reindex(range(len(qids))).to_numpy()
        self.offsets = np.searchsorted(codes, np.arange(len(qids) + 1))
        self.doc_ids = frame[DOC_ID].to_numpy(dtype=object)
        self.ranks = frame[TEACHER_RANK].to_numpy(dtype=np.int64)
        self._texts = frame[TEXT].to_numpy(dtype=object) if with_text else None
        self._text_of: dict[str, str] | None = None
        if self._texts is None:
            if corpus is None:
                raise InputError(path, None, "dataset has no `text` column: pass --corpus")
            _check_in_corpus(corpus, self.doc_ids, self.qids[codes], path)
        self.corpus_texts = None if corpus is None else CorpusTexts(corpus)
        sizes = np.diff(self.offsets)
        self.counts = {
            "queries": len(self),
            "rows": len(self.doc_ids),
            "queries_without_candidates": int((sizes == 0).sum()),
            "short_lists": int((sizes < list_size).sum()),
        }
        if self.counts["queries_without_candidates"]:
            raise InputError(path, None, f"{self.counts['queries_without_candidates']} queries have no candidate")

    def __len__(self) -> int:
        return len(self.qids)

    def sample(self, index: int, rng: np.random.Generator) -> TrainList:
        start, end = self.offsets[index], self.offsets[index + 1]
        picks = np.arange(start, end)
        if len(picks) > self.list_size:
            if self.sampling == "top":
                picks = picks[: self.list_size]
            else:
                picks = np.sort(rng.choice(picks, self.list_size, replace=False))
        return TrainList(
            str(self.qids[index]),
            str(self.queries[index]),
            tuple(self.doc_ids[picks]),
            tuple(float(self.depth - r + 1) for r in self.ranks[picks]),
        )

    def texts(self, doc_ids: list[str]) -> list[str]:
        if self._texts is None:
            return self.corpus_texts(doc_ids)
        if self._text_of is None:
            self._text_of = dict(zip(self.doc_ids, self._texts, strict=True))
        return [self._text_of[d] for d in doc_ids]


# --- stage 1: relevance labels + first-stage hard negatives ---------------------------------


class RelevanceLists:
    """One relevant passage + hard negatives from a first-stage run, per query."""

    def __init__(
        self,
        run_path: str | Path,
        qrels: str | Path,
        queries: str | Path,
        corpus: CorpusStore,
        depth: int = STAGE_DEFAULTS["infonce"]["depth"],
        list_size: int = STAGE_DEFAULTS["infonce"]["list_size"],
        threshold: int = 1,
        max_queries: int = 0,
        positives_from: str = "qrels",
    ):
        if positives_from not in ("qrels", "run"):
            raise ValueError(f"positives_from must be 'qrels' or 'run', not {positives_from!r}")
        if list_size < 2:
            raise ValueError("stage 1 needs list_size >= 2 (one positive, at least one negative)")
        self.list_size = list_size
        run = read_trec_run(run_path)  # a run without rankings raises InputError
        query_text = load_queries(queries)
        check_run_references(run, run_path, query_text)
        judged = load_qrels(qrels)
        relevant = judged[judged["relevance"] >= threshold].groupby("qid")["doc_id"].agg(list).to_dict()
        any_relevant = judged[judged["relevance"] > 0].groupby("qid")["doc_id"].agg(set).to_dict()
        self.skipped = {"no_relevant": 0, "no_negatives": 0}
        self.qids, self.queries, self.positives, self.negatives = [], [], [], []
        for qid, docs in ranked_lists(run).items():
            if max_queries and len(self.qids) >= max_queries:
                break
            positives = relevant.get(qid, [])
            if positives_from == "run":
                judged = set(positives)
                positives = [d for d in docs[:depth] if d in judged]
            negatives = [d for d in docs[:depth] if d not in any_relevant.get(qid, set())]
            if not positives:
                self.skipped["no_relevant"] += 1
                continue
            if not negatives:
                self.skipped["no_negatives"] += 1
                continue
            self.qids.append(qid)
            self.queries.append(query_text[qid])
            self.positives.append(positives)
            self.negatives.append(negatives)
        if not self.qids:
            raise InputError(run_path, None, f"no training query: every query was skipped {self.skipped}")
        if any(self.skipped.values()):
            log.warning("stage 1: skipped queries %s (kept %d)", self.skipped, len(self.qids))
        used = np.array([d for docs in (*self.positives, *self.negatives) for d in docs], dtype=object)
        owners = np.array(
            [q for q, docs in zip(self.qids * 2, (*self.positives, *self.negatives), strict=True) for _ in docs],
            dtype=object,
        )
        _check_in_corpus(corpus, used, owners, run_path)
        self.texts = CorpusTexts(corpus)
        self.counts = {
            "queries": len(self),
            "skipped_no_relevant": self.skipped["no_relevant"],
            "skipped_no_negatives": self.skipped["no_negatives"],
            "short_lists": sum(len(n) < list_size - 1 for n in self.negatives),
        }

    def __len__(self) -> int:
        return len(self.qids)

    def sample(self, index: int, rng: np.random.Generator) -> TrainList:
        positives, negatives = self.positives[index], self.negatives[index]
        positive = positives[rng.integers(len(positives))]
        k = min(self.list_size - 1, len(negatives))
        picked = [negatives[i] for i in np.sort(rng.choice(len(negatives), k, replace=False))]
        return TrainList(self.qids[index], self.queries[index], (positive, *picked), (1.0, *([0.0] * len(picked))))
