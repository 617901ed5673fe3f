"""The watchdog that turns a call waiting forever into an error (used around colbert-ai)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.infra import watchdog
from pipeline.infra.watchdog import StallError, run_with_watchdog

STUCK = r"a stuck call made no progress for \d+ s.*distillm a stuck call in wait \("


def _stop_stuck_call(stall_seconds: float) -> float:
    """Watch a call that waits forever; return how long the watchdog took to stop it.

    No upper bound is asserted (a loaded machine may be slow to run the watcher): a watchdog
    that never fires leaves the test waiting, and the test's timeout (120 s, 80 windows) fails it.
    """
    release = threading.Event()
    started = time.monotonic()
    try:
        with pytest.raises(StallError, match=STUCK):
            run_with_watchdog(release.wait, "a stuck call", stall_seconds=stall_seconds)
    finally:
        release.set()  # let the abandoned worker thread end
    return time.monotonic() - started


@pytest.mark.timeout(120)
def test_watchdog_stops_a_call_that_waits_forever() -> None:
    assert _stop_stuck_call(1.5) >= 1.5  # stopped, and only after a whole window without progress


@pytest.fixture
def busy_neighbours() -> Iterator[None]:
    """A thread and a child process that burn CPU all along, started before the call
    (like the JVM's threads or a vLLM engine process in the same test session)."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(10_000))

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        stop.set()
        child.kill()
        child.wait(timeout=60)
        thread.join()


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("busy_neighbours")
def test_busy_threads_and_processes_that_were_already_there_do_not_hide_a_stall() -> None:
    assert _stop_stuck_call(1.5) >= 1.5


def test_watchdog_lets_busy_work_finish_and_passes_results_and_errors_through() -> None:
    def busy() -> int:
        deadline, n = time.thread_time() + 3.0, 0
        while time.thread_time() < deadline:
            n += 1
        return n

    assert run_with_watchdog(busy, "busy work", stall_seconds=2.0) > 0

    def fails() -> None:
        raise KeyError("from the worker")

    with pytest.raises(KeyError, match="from the worker"):
        run_with_watchdog(fails, "failing work", stall_seconds=5)


def test_a_call_that_returned_is_done_even_if_its_thread_is_slow_to_end() -> None:
    """The result is there once fn returns; freeing the thread's locals after it (here a
    __del__ that waits, idle, until the test has its result) is not the call's work. A watchdog
    that waited for the thread to end would see it idle for the whole window and raise StallError."""
    local = threading.local()
    returned = threading.Event()

    class SlowToFree:
        def __del__(self) -> None:
            returned.wait(60)

    def call() -> int:
        local.value = SlowToFree()
        return 7

    try:
        assert run_with_watchdog(call, "quick work", stall_seconds=1.0) == 7
    finally:
        returned.set()


def test_a_child_process_the_call_starts_counts_as_progress() -> None:
    """A compiler run by the call: the worker thread only waits, the child works."""
    code = "import time\nend = time.process_time() + 3\nwhile time.process_time() < end: pass"

    def compile_like() -> int:
        return subprocess.run([sys.executable, "-c", code], check=True, timeout=600).returncode

    assert run_with_watchdog(compile_like, "a compiler", stall_seconds=1.0) == 0


@pytest.fixture
def cpu_times_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every thread and process reads as having used no more CPU than when first seen: the watched
    call gets no CPU at all, as on a machine too busy to run it, however fast this machine is.
    Whether a task is runnable (state R: running or waiting for a CPU) is still read from /proc."""
    read, first_seen = watchdog._task, {}

    def frozen(path: str, children: bool) -> tuple[float, bool] | None:
        task = read(path, children)
        if task is None:
            return None
        return first_seen.setdefault(path, task[0]), task[1]

    monkeypatch.setattr(watchdog, "_task", frozen)


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("cpu_times_frozen")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="no per-thread states (not Linux)")
def test_a_call_starved_of_cpu_is_slow_not_stuck() -> None:
    """Work that waits for a CPU gets far less than the 1% of a core the watchdog asks for, but
    it is runnable: it must not be stopped. The child computes for 4 s of wall time (4 windows)."""
    code = "import time\nend = time.monotonic() + 4\nwhile time.monotonic() < end: pass"
    started = time.monotonic()

    def starved() -> int:
        return subprocess.run([sys.executable, "-c", code], check=True, timeout=600).returncode

    assert run_with_watchdog(starved, "starved work", stall_seconds=1.0) == 0
    assert time.monotonic() - started >= 4


@pytest.mark.timeout(120)
@pytest.mark.usefixtures("cpu_times_frozen")
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="no per-thread states (not Linux)")
def test_a_call_whose_child_only_sleeps_is_stuck() -> None:
    """The counterpart, under the same frozen CPU times: a child that is never runnable is stopped,
    so above it is being runnable that kept the starved call going."""
    children: list[subprocess.Popen] = []

    def sleeps() -> int:
        children.append(subprocess.Popen(["sleep", "600"]))
        return children[-1].wait()

    try:
        with pytest.raises(StallError, match=r"a sleeping child made no progress for \d+ s"):
            run_with_watchdog(sleeps, "a sleeping child", stall_seconds=1.0)
    finally:
        for child in children:  # the abandoned worker waits on it
            child.kill()
            child.wait(timeout=60)


def test_the_watch_clock_counts_a_pause_of_the_whole_process_as_two_polls_at_most() -> None:
    ticks = iter([10.0, 10.2, 10.4, 110.4, 110.6])  # a 100 s pause between the 2nd and 3rd sample
    clock = watchdog._WatchClock(poll=0.2, monotonic=lambda: next(ticks))
    assert [round(clock.now(), 6) for _ in range(4)] == [0.2, 0.4, 0.8, 1.0]


def test_a_paused_process_is_not_a_stalled_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM or process paused for 100 s (here: the watcher's clock jumps) while the call sleeps:
    the call's threads did not run because nothing did, which says nothing about the call. Before
    the watch clock, the next sample saw 100 s without CPU use and raised StallError."""
    calls = 0

    def jumps_after_the_first_sample() -> float:
        nonlocal calls
        calls += 1
        return time.monotonic() + (100.0 if calls >= 3 else 0.0)

    clock = watchdog._WatchClock
    monkeypatch.setattr(watchdog, "_WatchClock", lambda poll: clock(poll, jumps_after_the_first_sample))

    def naps() -> int:
        time.sleep(0.8)  # idle for less than the 2 s window
        return 5

    assert run_with_watchdog(naps, "a call that naps", stall_seconds=2.0) == 5
    assert calls >= 3  # the pause was seen
