"""Crash points: a process stops itself at the Nth pass of an event, once per marker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.infra.crash_points import VARIABLE, crash_point_setting, wait_for_crash_point

# passes "step" 3 times, "other" once, printing after each pass of "step"
PASSES = """
from pipeline.infra.crash_points import crash_point
for n in range(1, 4):
    crash_point("other")
    crash_point("step")
    print(n, flush=True)
"""


@pytest.mark.timeout(120)
def test_the_first_process_stops_at_the_nth_pass_and_the_next_goes_on(tmp_path: Path):
    marker = tmp_path / "stopped"
    env = {**os.environ, VARIABLE: crash_point_setting("step", 2, marker)}
    with open(tmp_path / "first.out", "wb") as out:
        first = subprocess.Popen([sys.executable, "-c", PASSES], env=env, stdout=out)
    try:
        assert wait_for_crash_point(marker, lambda: first.poll() is None) == first.pid
        assert marker.read_text() == f"step 2 {first.pid}\n"
        assert (tmp_path / "first.out").read_text() == "1\n"  # stopped in the 2nd pass, before its print
    finally:
        first.kill()
        first.wait(timeout=60)
    second = subprocess.run(  # the marker exists: it passes the point without stopping
        [sys.executable, "-c", PASSES], env=env, capture_output=True, text=True, timeout=60
    )
    assert (second.returncode, second.stdout) == (0, "1\n2\n3\n")


@pytest.mark.timeout(120)
def test_a_run_that_ends_without_stopping_is_reported(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    with pytest.raises(RuntimeError, match="ended without stopping at its crash point"):
        wait_for_crash_point(tmp_path / "stopped", lambda: proc.poll() is None)
