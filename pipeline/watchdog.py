"""A watchdog for library calls that can wait forever: no CPU progress for too long is an error.

colbert-ai (and torch's extension builder under it) can block without end: on a compile
lock file left by a killed build, or on a queue a crashed child never fills. We run such
calls in a worker thread and watch the CPU time of this process and its children; a call
that uses almost none for `stall_seconds` raises StallError naming where every thread
waits, instead of hanging the pipeline.
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

    Progress is CPU time: of this process (the watching thread excluded) and of its child
    processes (compilers). If it grows by less than 1% of one core over `stall_seconds`,
    fn is stuck waiting (a lock file, a queue nobody fills, a dead child) and StallError
    says where; the worker thread is abandoned (a daemon, it does not block exit).
    `hint()`, if given, adds what the caller knows about likely causes to the message.
    `stall_seconds` None or 0: call fn() directly.
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
    own_start = time.thread_time()
    samples: deque[tuple[float, float]] = deque()
    worker.start()
    while True:
        worker.join(poll)
        if not worker.is_alive():
            break
        now, cpu = time.monotonic(), _process_tree_cpu_seconds() - (time.thread_time() - own_start)
        samples.append((now, cpu))
        while len(samples) > 1 and samples[1][0] <= now - stall_seconds:
            samples.popleft()
        since, cpu_then = samples[0]
        if now - since >= stall_seconds and cpu - cpu_then < IDLE_CPU_SHARE * (now - since):
            raise StallError(_stall_message(what, now - since, cpu - cpu_then) + (hint() if hint else ""))
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _process_tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process, its reaped children and its live descendants."""
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    proc = Path("/proc")
    if not proc.is_dir():
        return total
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            stat = (proc / entry.name / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, ...
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        cpu[pid] = sum(int(f) for f in fields[11:15]) / ticks  # utime, stime, cutime, cstime
    pending = list(children.get(os.getpid(), []))
    while pending:
        pid = pending.pop()
        total += cpu.get(pid, 0.0)
        pending.extend(children.get(pid, []))
    return total


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
