"""The watchdog that turns a call waiting forever into an error (used around colbert-ai)."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.watchdog import StallError, run_with_watchdog


def test_watchdog_stops_a_call_that_waits_forever() -> None:
    release = threading.Event()
    started = time.perf_counter()
    try:
        with pytest.raises(
            StallError, match=r"a stuck call made no progress for \d+ s.*distillm a stuck call in wait \("
        ):
            run_with_watchdog(release.wait, "a stuck call", stall_seconds=1.5)
    finally:
        release.set()  # let the abandoned worker thread end
    assert time.perf_counter() - started < 15


def test_watchdog_lets_busy_work_finish_and_passes_results_and_errors_through() -> None:
    def busy() -> int:
        deadline, n = time.process_time() + 2.5, 0
        while time.process_time() < deadline:
            n += 1
        return n

    assert run_with_watchdog(busy, "busy work", stall_seconds=1.0) > 0

    def fails() -> None:
        raise KeyError("from the worker")

    with pytest.raises(KeyError, match="from the worker"):
        run_with_watchdog(fails, "failing work", stall_seconds=5)
