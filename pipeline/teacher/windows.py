"""Bottom-up sliding windows over a ranking, as in RankGPT / castorini/rank_llm.

A listwise teacher sees `window` candidates at a time. The first window covers the bottom of
the re-ranked depth; each next window moves `stride` positions up and is built from the
ranking as re-ordered by all earlier windows, so strong candidates are carried to the top.
With depth 100, window 20 and stride 10 that is 9 windows: (80, 100), (70, 90), ..., (0, 20).

Difference from rank_llm (src/rank_llm/rerank/listwise/listwise_rankllm.py): its sequential
`sliding_windows` loop (`end = n; start = n - window; while end > 0 and start + stride != 0`)
yields the same windows as ours for every n except n == window - stride (e.g. n = 10 with
20/10): there its first `start + stride` is already 0, so it yields no window and leaves the
candidates in first-stage order. We yield the one window (0, n), because a short candidate
list should still be re-ranked. (rank_llm's batched `_sliding_windows_batched_async`, which
stops once a window starts at 0, agrees with ours for all n; n = 15 or 25 give no extra
trailing windows in either of its loops.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.teacher.settings import TeacherSettings


@dataclass(frozen=True)
class Window:
    """One window: positions [start, end) of the current ranking, `index` in processing order."""

    index: int  # 0 = the bottom window, processed first
    start: int  # 0-based, inclusive
    end: int  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start


def sliding_windows(n: int, window: int = TeacherSettings.window, stride: int = TeacherSettings.stride) -> list[Window]:
    """Windows over the top `n` positions, bottom first, ending with the one that starts at 0.

    The last window (the top one) may be shorter when n is not window + k * stride; n < window
    gives the single window (0, n) and n == 0 gives none. Raises ValueError for n < 0,
    window < 1, or a stride outside 1..window (a larger stride would skip candidates).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in 1..window ({window}), got {stride}")
    windows: list[Window] = []
    end = n
    while n > 0:
        start = max(end - window, 0)
        windows.append(Window(len(windows), start, end))
        if start == 0:
            break
        end -= stride
    return windows


def apply_permutation(ranking: list[str], window: Window, order: list[int]) -> list[str]:
    """A new ranking with the window's slice re-ordered: `order` lists 0-based window
    positions, best first, and must be a permutation of range(window.size)."""
    if not 0 <= window.start <= window.end <= len(ranking):
        raise ValueError(f"window [{window.start}, {window.end}) outside a ranking of {len(ranking)}")
    if sorted(order) != list(range(window.size)):
        raise ValueError(f"order is not a permutation of range({window.size}): {order}")
    block = ranking[window.start : window.end]
    return [*ranking[: window.start], *(block[i] for i in order), *ranking[window.end :]]


def rerank(
    ranking: list[str],
    rank_window: Callable[[list[str]], list[int]],
    depth: int = TeacherSettings.depth,
    window: int = TeacherSettings.window,
    stride: int = TeacherSettings.stride,
) -> list[str]:
    """Re-rank the top `depth` of `ranking` window by window with `rank_window` (the ids of a
    window in current order -> a permutation of their positions, best first).

    Each window's permutation is applied before the next window is cut, as a real teacher
    run does; candidates below depth keep their order after the re-ranked top.
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    current = list(ranking)
    for w in sliding_windows(min(depth, len(current)), window, stride):
        current = apply_permutation(current, w, rank_window(current[w.start : w.end]))
    return current
