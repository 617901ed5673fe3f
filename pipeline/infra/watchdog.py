"""A watchdog for library calls that can wait forever: no CPU progress for too long is an error.

colbert-ai (and torch's extension builder under it) can block without end: on a compile
lock file left by a killed build, or on a queue a crashed child never fills. We run such
calls in a worker thread and watch the work it starts (the worker, new threads, new child
processes): the CPU time it uses, and whether it is waiting for a CPU on a busy machine. A
call that neither runs nor waits to run for `stall_seconds` raises StallError naming where
every thread waits, instead of hanging the pipeline.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

STALL_SECONDS = 600.0
IDLE_CPU_SHARE = 0.01  # below 1% of one core for stall_seconds counts as "no progress"

T = TypeVar("T")


class StallError(RuntimeError):
    """Indexing or search made no progress (no CPU used, none waited for) for the allowed time."""


def run_with_watchdog(
    fn: Callable[[], T],
    what: str,
    stall_seconds: float | None = STALL_SECONDS,
    hint: Callable[[], str] | None = None,
) -> T:
    """Run fn() in a worker thread and return its result (or raise its exception).

    Progress is the CPU time of the work fn starts: the worker thread, threads started
    after the call began, and processes started after it (compilers), reaped or alive.
    A thread or process of the call that is runnable (Linux state R: running, or waiting
    for a CPU) when sampled counts as progress too: on an overloaded machine a starved
    call is slow, not stuck.
    Threads and processes that were already there (a JVM, a vLLM engine, this watching
    thread) do not count, so their background CPU use cannot hide a stuck call. Pools
    that existed before (torch, OpenMP) still count through the worker, which takes
    part in their work. If progress grows by less than 1% of one core over
    `stall_seconds`, fn is stuck waiting (a lock file, a queue nobody fills, a dead
    child) and StallError says where; the worker thread is abandoned (a daemon, it does
    not block exit). `hint()`, if given, adds what the caller knows about likely causes
    to the message. `stall_seconds` None or 0: call fn() directly.
    """
    if not stall_seconds:
        return fn()
    outcome: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            outcome["error"] = e
        finally:
            done.set()

    worker = threading.Thread(target=work, name=f"distillm {what}", daemon=True)
    poll = min(5.0, stall_seconds / 10)
    before = _Snapshot.take()
    samples: deque[tuple[float, float]] = deque()
    clock = _WatchClock(poll)
    worker.start()
    # Wait for fn to return, not for the thread to end: what runs after (the interpreter
    # freeing the thread's locals, any __del__ there) is not the call's work and may wait.
    while not done.wait(poll):
        now, (progress, runnable) = clock.now(), before.progress()
        if runnable:  # the call runs or waits for a CPU: not stuck, whatever it got
            samples.clear()
        samples.append((now, progress))
        while len(samples) > 1 and samples[1][0] <= now - stall_seconds:
            samples.popleft()
        since, progress_then = samples[0]
        if now - since >= stall_seconds and progress - progress_then < IDLE_CPU_SHARE * (now - since):
            raise StallError(_stall_message(what, now - since, progress - progress_then) + (hint() if hint else ""))
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


class _WatchClock:
    """Seconds the watcher was awake to see the call, not wall-clock seconds.

    The watcher samples every `poll` seconds. A longer gap between two samples means the
    watcher itself did not run: the whole process was paused (SIGSTOP, a suspended laptop
    or VM, a host that did not schedule it), and so was the call. Such a gap is no evidence
    that the call is stuck, so it counts as at most `max_gap` (two polls): a pause can
    never raise StallError, while a call stuck on a starved machine is still stopped, later.
    """

    def __init__(self, poll: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_gap, self.monotonic = 2 * poll, monotonic
        self.last = monotonic()
        self.seconds = 0.0

    def now(self) -> float:
        wall = self.monotonic()
        self.seconds += min(wall - self.last, self.max_gap)
        self.last = wall
        return self.seconds


class _Snapshot:
    """The threads and descendant processes alive when a watched call begins, and the
    progress of those started since (kept after they end, so the total never goes down)."""

    def __init__(self, threads: set[int], processes: set[int], reaped: float) -> None:
        self.threads, self.processes, self.reaped = threads, processes, reaped
        self.seen: dict[tuple[str, int], float] = {}
        self.retired = 0.0  # CPU of ended threads/processes whose id was then reused

    @classmethod
    def take(cls) -> _Snapshot:
        times = os.times()
        return cls(set(_thread_tasks()), set(_descendant_tasks()), times.children_user + times.children_system)

    def progress(self) -> tuple[float, bool]:
        """CPU seconds used by the threads and processes that were not there at the snapshot,
        and whether one of them is runnable now.

        Reaped children count as a whole (os.times cannot tell them apart), and a new
        process that ends is then counted twice: both only add a single step, which the
        sliding window of run_with_watchdog outlives.
        """
        times = os.times()
        current = {("thread", tid): t for tid, t in _thread_tasks().items() if tid not in self.threads}
        current.update((("process", pid), t) for pid, t in _descendant_tasks().items() if pid not in self.processes)
        for key, (seconds, _) in current.items():
            if seconds < self.seen.get(key, 0.0):  # the id was reused by a newer thread or process
                self.retired += self.seen[key]
            self.seen[key] = seconds
        total = self.retired + sum(self.seen.values()) + times.children_user + times.children_system - self.reaped
        if not os.path.isdir("/proc"):  # no per-thread or per-process times: all of this process counts
            total += times.user + times.system
        return total, any(runnable for _, runnable in current.values())


def _thread_tasks() -> dict[int, tuple[float, bool]]:
    """CPU seconds and runnable state (see _task) of each live thread of this process, by native id."""
    progress: dict[int, tuple[float, bool]] = {}
    if not os.path.isdir("/proc/self/task"):  # no per-thread times (not Linux): see progress
        return progress
    for entry in os.scandir("/proc/self/task"):
        task = _task(f"/proc/self/task/{entry.name}/stat", children=False)
        if task is not None:
            progress[int(entry.name)] = task
    return progress


def _descendant_tasks() -> dict[int, tuple[float, bool]]:
    """CPU seconds (with its reaped children) and runnable state of each live descendant process, by pid."""
    if not os.path.isdir("/proc"):
        return {}
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # the process ended meanwhile
                continue
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry.name))
    progress: dict[int, tuple[float, bool]] = {}
    pending = list(children.get(os.getpid(), []))
    while pending:
        pid = pending.pop()
        task = _task(f"/proc/{pid}/stat", children=True)
        if task is not None:
            progress[pid] = task
        pending.extend(children.get(pid, []))
    return progress


def _task(path: str, children: bool) -> tuple[float, bool] | None:
    """From a /proc stat file: utime + stime (and cutime + cstime with `children`), and whether
    the task is runnable (state R; of a process, its main thread's). None if it is gone."""
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / _TICKS, fields[0] == "R"


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stall_message(what: str, seconds: float, progress: float) -> str:
    """What stalled, and where each other thread of the process waits (its innermost frame)."""
    message = f"{what} made no progress for {seconds:.0f} s ({progress:.2f} CPU seconds, never runnable): stopped"
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    frames = sys._current_frames()
    frames.pop(threading.get_ident(), None)  # the watching thread
    waits = [
        f"{names.get(ident, ident)} in {frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})"
        for ident, frame in frames.items()
    ]
    if waits:
        message += "; threads: " + "; ".join(waits)
    return message
