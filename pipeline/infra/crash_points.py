"""Crash points: where tests of resumption stop a process, exactly, before they kill it.

A test that kills a run mid-way must know where the kill lands, whatever the machine's speed.
So the run stops itself at a named point and says so; the test then kills it:

    DISTILLM_CRASH_POINT=EVENT:N:MARKER

The Nth time this process passes `crash_point(EVENT)` it writes MARKER (`EVENT N PID`) and
stops itself (SIGSTOP). Only the first process to get there stops: MARKER is created
exclusively, so the other actors of a Ray run, or a restarted one, carry on. The test waits
for the stop (`wait_for_crash_point`, no deadline but the test's own timeout) and kills the
process by the pid it wrote (SIGKILL: the crash under test). Unset, as always outside tests,
a crash point costs one environment lookup.

Events: `reply-log` (a record reached the OS, `pipeline.contract.reply_log.ReplyLogWriter`),
`train-step` (a step's row reached `metrics.csv`, `pipeline.student.trainer`).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

VARIABLE = "DISTILLM_CRASH_POINT"
_passed: Counter[str] = Counter()  # per process: how often each event was passed


def crash_point(event: str) -> None:
    """Stop this process here if DISTILLM_CRASH_POINT names `event` and this is its Nth pass."""
    setting = os.environ.get(VARIABLE)
    if setting is None:
        return
    wanted, count, marker = setting.split(":", 2)
    if wanted != event:
        return
    _passed[event] += 1
    if _passed[event] != int(count):
        return
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another process stopped here first
        return
    with os.fdopen(fd, "w") as f:
        f.write(f"{event} {count} {os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGSTOP)


def crash_point_setting(event: str, count: int, marker: Path) -> str:
    """The value of DISTILLM_CRASH_POINT that stops at the `count`th `event`, writing `marker`."""
    return f"{event}:{count}:{marker}"


def wait_for_crash_point(marker: Path, running: Callable[[], bool], poll: float = 0.05) -> int:
    """Wait until a process has stopped at the crash point that writes `marker`; return its pid.

    Waits without a deadline (the calling test's timeout is the limit): first for the marker's
    line, then for the process to be in state T (stopped), so a kill lands exactly there.
    `running()` false before the marker is written (the run ended without passing the crash
    point) raises RuntimeError.
    """
    while not (marker.exists() and marker.read_text().endswith("\n")):
        if not running():
            raise RuntimeError(f"the run ended without stopping at its crash point ({marker} not written)")
        time.sleep(poll)
    pid = int(marker.read_text().split()[2])
    while _state(pid) != "T":
        time.sleep(poll)
    return pid


def _state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R running, S sleeping, T stopped, ...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]
