"""Sliding windows: the window plan, applying permutations, and oracle rankers on DL19."""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.teacher.windows import Window, apply_permutation, rerank, sliding_windows


def spans(n: int, window: int = 20, stride: int = 10) -> list[tuple[int, int]]:
    return [(w.start, w.end) for w in sliding_windows(n, window, stride)]


def rank_llm_spans(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """rank_llm's sequential loop (ListwiseRankLLM.sliding_windows), restated as the oracle."""
    out, end, start = [], n, n - window
    while end > 0 and start + stride != 0:
        start = max(start, 0)
        out.append((start, end))
        end, start = end - stride, start - stride
    return out


def test_the_standard_plan_is_nine_windows_bottom_up():
    windows = sliding_windows(100)
    assert [(w.index, w.start, w.end) for w in windows] == [(i, 80 - 10 * i, 100 - 10 * i) for i in range(9)]
    assert all(w.size == 20 for w in windows)


@pytest.mark.parametrize(
    ("n", "window", "stride", "expected"),
    [
        (0, 20, 10, []),
        (1, 20, 10, [(0, 1)]),
        (15, 20, 10, [(0, 15)]),  # n < window: one short window
        (20, 20, 10, [(0, 20)]),
        (25, 20, 10, [(5, 25), (0, 15)]),  # not a multiple of the stride: a short top window
        (30, 20, 10, [(10, 30), (0, 20)]),
        (35, 20, 10, [(15, 35), (5, 25), (0, 15)]),
        (40, 20, 20, [(20, 40), (0, 20)]),  # stride == window: disjoint windows
        (5, 3, 1, [(2, 5), (1, 4), (0, 3)]),
    ],
)
def test_window_plans(n, window, stride, expected):
    assert spans(n, window, stride) == expected


def test_same_windows_as_rank_llm_except_where_it_yields_none():
    for window in range(1, 25):
        for stride in range(1, window + 1):
            for n in range(0, 60):
                ours, theirs = spans(n, window, stride), rank_llm_spans(n, window, stride)
                if n == window - stride and n > 0:
                    # rank_llm's first `start + stride` is already 0: it re-ranks nothing
                    assert theirs == [] and ours == [(0, n)]
                else:
                    assert ours == theirs, (n, window, stride)


@pytest.mark.parametrize(("n", "window", "stride"), [(-1, 20, 10), (10, 0, 1), (10, 20, 0), (10, 20, 21), (10, 5, -1)])
def test_bad_arguments_are_rejected(n, window, stride):
    with pytest.raises(ValueError):
        sliding_windows(n, window, stride)


def test_apply_permutation_returns_a_new_list():
    ranking = list("abcdef")
    out = apply_permutation(ranking, Window(0, 2, 5), [2, 0, 1])
    assert out == list("abecdf") and ranking == list("abcdef")


@pytest.mark.parametrize("order", [[0, 1], [0, 1, 1], [0, 1, 3], [1, 2, 3]])
def test_apply_permutation_rejects_a_non_permutation(order):
    with pytest.raises(ValueError):
        apply_permutation(list("abcdef"), Window(0, 2, 5), order)


def test_apply_permutation_rejects_a_window_outside_the_ranking():
    with pytest.raises(ValueError):
        apply_permutation(list("abc"), Window(0, 1, 4), [0, 1, 2])


def identity(ids: list[str]) -> list[int]:
    return list(range(len(ids)))


def reverse(ids: list[str]) -> list[int]:
    return list(range(len(ids)))[::-1]


def test_identity_ranker_keeps_the_ranking():
    ranking = [f"d{i}" for i in range(137)]
    assert rerank(ranking, identity) == ranking


def test_reverse_ranker_by_hand():
    # (10, 30) reversed: 0..9, 29..10; then (0, 20) reversed: 20..29, 9..0; tail 19..10
    ranking = [str(i) for i in range(30)]
    expected = [*range(20, 30), *range(9, -1, -1), *range(19, 9, -1)]
    assert rerank(ranking, reverse, depth=30) == [str(i) for i in expected]


def test_each_window_sees_the_ranking_left_by_the_previous_one():
    seen: list[list[str]] = []

    def record(ids: list[str]) -> list[int]:
        seen.append(ids)
        return reverse(ids)

    rerank([str(i) for i in range(30)], record, depth=30)
    assert seen == [[str(i) for i in range(10, 30)], [*map(str, range(10)), *map(str, range(29, 19, -1))]]


def test_fewer_candidates_than_a_window_is_one_call():
    calls: list[int] = []

    def count(ids: list[str]) -> list[int]:
        calls.append(len(ids))
        return reverse(ids)

    assert rerank(list("abcde"), count) == list("edcba") and calls == [5]


def test_candidates_below_depth_keep_their_order():
    ranking = [f"d{i}" for i in range(50)]
    out = rerank(ranking, reverse, depth=25)
    assert out[25:] == ranking[25:] and sorted(out[:25]) == sorted(ranking[:25])
    assert rerank(ranking, reverse, depth=0) == ranking
    with pytest.raises(ValueError):
        rerank(ranking, reverse, depth=-1)


def better_first(rel: dict[str, int], position: dict[str, int], doc: str) -> tuple[int, int]:
    """The perfect ranker's sort key: relevance (unjudged = 0) desc, then BM25 position."""
    return -rel.get(doc, 0), position[doc]


def sorting_ranker(key: Callable[[str], tuple[int, int]]) -> Callable[[list[str]], list[int]]:
    """A window ranker that sorts the window's ids by `key`."""
    return lambda ids: sorted(range(len(ids)), key=lambda i: key(ids[i]))


def test_a_perfect_ranker_brings_the_ten_most_relevant_to_the_top(trec_dl: Path):
    """One bottom-up pass (window 20, stride 10) with a perfect window ranker puts the 10
    most relevant of the top-100 on top, in order.

    Proof. The ranker sorts every window by one fixed key, (relevance desc, BM25 position),
    so "better" is a single total order over the top-100 (unjudged = 0). Claim: after
    the window starting at s, positions s..s+9 hold the 10 best of the documents BM25 put at
    s..99, sorted. s = 80: the window sorts 80..99 whole. s -> s - 10: the window covers
    s-10..s+9, i.e. the untouched BM25 documents s-10..s-1 plus (by the claim) the 10 best of
    s..99; the 10 best of s-10..99 all lie in that union, and sorting it puts them at
    s-10..s-1. At s = 0 the top 10 are the 10 best of the top-100.
    """
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for line in (trec_dl / "qrels.dl19-passage.txt").read_text().splitlines():
        qid, _, doc_id, rel = line.split()
        qrels[qid][doc_id] = int(rel)
    changed = 0
    for query in json.loads((trec_dl / "retrieve_results_dl19.json").read_text()):
        ranking = [hit["docid"] for hit in query["hits"]][:100]
        rel = qrels[str(query["hits"][0]["qid"])]
        position = {doc: i for i, doc in enumerate(ranking)}

        key = functools.partial(better_first, rel, position)
        best = sorted(ranking, key=key)[:10]
        assert rerank(ranking, sorting_ranker(key))[:10] == best
        changed += best != ranking[:10]
    assert changed > 30  # BM25's own top 10 is rarely already the ideal one
