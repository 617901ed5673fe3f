"""A watchdog for library calls that can wait forever: no CPU progress for too long is an error.

colbert-ai (and torch's extension builder under it) can block without end: on a compile
lock file left by a killed build, or on a queue a crashed child never fills. We run such
calls in a worker thread and watch the CPU time of the work it starts (the worker, new
threads, new child processes); a call that uses almost none for `stall_seconds` raises
StallError naming where every thread waits, instead of hanging the pipeline.
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
    """Indexing or search made no progress (no CPU use) for the allowed time."""


def run_with_watchdog(
    fn: Callable[[], T],
    what: str,
    stall_seconds: float | None = STALL_SECONDS,
    hint: Callable[[], str] | None = None,
) -> T:
    """Run fn() in a worker thread and return its result (or raise its exception).

    Progress is the CPU time of the work fn starts: the worker thread, threads started
    after the call began, and processes started after it (compilers), reaped or alive.
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

    def work() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            outcome["error"] = e

    worker = threading.Thread(target=work, name=f"distillm {what}", daemon=True)
    poll = min(5.0, stall_seconds / 10)
    before = _Snapshot.take()
    samples: deque[tuple[float, float]] = deque()
    worker.start()
    while True:
        worker.join(poll)
        if not worker.is_alive():
            break
        now, cpu = time.monotonic(), before.new_cpu_seconds()
        samples.append((now, cpu))
        while len(samples) > 1 and samples[1][0] <= now - stall_seconds:
            samples.popleft()
        since, cpu_then = samples[0]
        if now - since >= stall_seconds and cpu - cpu_then < IDLE_CPU_SHARE * (now - since):
            raise StallError(_stall_message(what, now - since, cpu - cpu_then) + (hint() if hint else ""))
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


class _Snapshot:
    """The threads and descendant processes alive when a watched call begins, and the CPU
    time of those started since (kept after they end, so the total never goes down)."""

    def __init__(self, threads: set[int], processes: set[int], reaped: float) -> None:
        self.threads, self.processes, self.reaped = threads, processes, reaped
        self.seen: dict[tuple[str, int], float] = {}
        self.retired = 0.0  # CPU of ended threads/processes whose id was then reused

    @classmethod
    def take(cls) -> _Snapshot:
        times = os.times()
        return cls(
            set(_thread_cpu_seconds()), set(_descendant_cpu_seconds()), times.children_user + times.children_system
        )

    def new_cpu_seconds(self) -> float:
        """CPU seconds used by threads and processes that were not there at the snapshot.

        Reaped children count as a whole (os.times cannot tell them apart), and a new
        process that ends is then counted twice: both only add a single step, which the
        sliding window of run_with_watchdog outlives.
        """
        times = os.times()
        current = {("thread", tid): cpu for tid, cpu in _thread_cpu_seconds().items() if tid not in self.threads}
        current.update(
            (("process", pid), cpu) for pid, cpu in _descendant_cpu_seconds().items() if pid not in self.processes
        )
        for key, cpu in current.items():
            if cpu < self.seen.get(key, 0.0):  # the id was reused by a newer thread or process
                self.retired += self.seen[key]
            self.seen[key] = cpu
        total = self.retired + sum(self.seen.values()) + times.children_user + times.children_system - self.reaped
        if not os.path.isdir("/proc"):  # no per-thread or per-process times: all of this process counts
            total += times.user + times.system
        return total


def _thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds of each live thread of this process, by native thread id."""
    cpu: dict[int, float] = {}
    if not os.path.isdir("/proc/self/task"):  # no per-thread times (not Linux): see new_cpu_seconds
        return cpu
    for entry in os.scandir("/proc/self/task"):
        seconds = _stat_cpu_seconds(f"/proc/self/task/{entry.name}/stat", children=False)
        if seconds is not None:
            cpu[int(entry.name)] = seconds
    return cpu


def _descendant_cpu_seconds() -> dict[int, float]:
    """CPU seconds of each live descendant process (with its reaped children), by pid."""
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
    cpu: dict[int, float] = {}
    pending = list(children.get(os.getpid(), []))
    while pending:
        pid = pending.pop()
        seconds = _stat_cpu_seconds(f"/proc/{pid}/stat", children=True)
        if seconds is not None:
            cpu[pid] = seconds
        pending.extend(children.get(pid, []))
    return cpu


def _stat_cpu_seconds(path: str, children: bool) -> float | None:
    """utime + stime (and cutime + cstime with `children`) from a /proc stat file; None if gone."""
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / _TICKS


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stall_message(what: str, seconds: float, cpu: float) -> str:
    """What stalled, and where each other thread of the process waits (its innermost frame)."""
    message = f"{what} made no progress for {seconds:.0f} s ({cpu:.2f} CPU seconds): stopped"
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
