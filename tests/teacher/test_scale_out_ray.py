"""The teacher on a local Ray instance (2 CPUs): same output as one process, and a killed actor
costs nothing but time."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import ray

from pipeline.cli import main
from pipeline.infra.crash_points import VARIABLE, crash_point_setting, wait_for_crash_point
from tests.teacher.conftest import dl19_inputs, log_records


@contextmanager
def ray_instance(env_vars: dict[str, str] | None = None) -> Iterator[None]:
    """A local Ray instance of this test (2 CPUs); env_vars: set in its workers (the actors)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env_vars} if env_vars else None,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def local_ray() -> Iterator[None]:
    with ray_instance():
        yield


def rerank(dl_store: Path, out: Path, backend: list[str], *extra: str) -> None:
    args = [
        "rerank",
        *dl19_inputs(dl_store),
        "--out",
        str(out),
        "--no-progress",
        "--tag",
        "t",
        *backend,
        *extra,
    ]
    assert main(args) == 0


RAY_BLOCKS_OF_10 = ("--engine", "ray", "--ray-actors", "2", "--ray-cpus-per-actor", "0.5", "--block-size", "10")


@pytest.mark.engine
def test_ray_blocks_equal_a_single_process_run(local_ray, dl_store: Path, rankvicuna_dl19_log: Path, tmp_path: Path):
    backend = ["--backend", f"replay:{rankvicuna_dl19_log}", "--prompt", "rank_vicuna"]
    rerank(dl_store, tmp_path / "single.run", backend)
    rerank(dl_store, tmp_path / "ray.run", backend, *RAY_BLOCKS_OF_10)
    assert (tmp_path / "ray.run").read_text() == (tmp_path / "single.run").read_text()
    assert log_records(tmp_path / "ray.run") == log_records(tmp_path / "single.run")
    assert len(list((tmp_path / "ray.run.blocks").glob("block-*.run"))) == 5  # 43 queries in blocks of 10
    # a second run finds every block done and only merges
    before = (tmp_path / "ray.run.blocks" / "block-00000.run.log.jsonl").stat().st_mtime_ns
    rerank(dl_store, tmp_path / "ray.run", backend, *RAY_BLOCKS_OF_10)
    assert (tmp_path / "ray.run.blocks" / "block-00000.run.log.jsonl").stat().st_mtime_ns == before


@pytest.mark.timeout(1800)
@pytest.mark.engine
def test_killed_actor_is_retried_without_loss(dl_store: Path, tiny_mistral: Path, tmp_path: Path):
    import psutil

    backend = [
        "--backend",
        "transformers",
        "--batch-size",
        "1",
        "--model",
        str(tiny_mistral),
        "--max-new-tokens",
        "12",
        "--max-queries",
        "4",
    ]
    rerank(dl_store, tmp_path / "single.run", backend)
    # the first actor to log its 3rd window (of its first block's 9) stops there; the others go on
    marker = tmp_path / "stopped"
    killed, not_ours, finished = [], [], threading.Event()

    def kill_the_stopped_actor() -> None:
        try:
            pid = wait_for_crash_point(marker, lambda: not finished.is_set())
        except RuntimeError:  # the run ended and no actor stopped: asserted below
            return
        # an actor of this run is under the raylet this process started: never kill another process
        if os.getpid() in {p.pid for p in psutil.Process(pid).parents()}:
            os.kill(pid, signal.SIGKILL)  # the crash under test
            killed.append(pid)
        else:
            not_ours.append(pid)
            os.kill(pid, signal.SIGCONT)  # let it go on: the run ends and the test fails below

    killer = threading.Thread(target=kill_the_stopped_actor)
    with ray_instance({VARIABLE: crash_point_setting("reply-log", 3, marker)}):
        killer.start()
        try:
            rerank(
                dl_store,
                tmp_path / "ray.run",
                backend,
                "--engine",
                "ray",
                "--ray-actors",
                "2",
                "--ray-cpus-per-actor",
                "0.5",
                "--block-size",
                "1",
            )
        finally:
            finished.set()
            killer.join()
    assert not not_ours, f"process {not_ours} stopped at this test's crash point but is not under its Ray"
    assert len(killed) == 1, "no actor stopped at the crash point"
    assert (tmp_path / "ray.run").read_text() == (tmp_path / "single.run").read_text()
    keys = [(r["qid"], r["window"]) for r in log_records(tmp_path / "ray.run")]
    assert len(keys) == len(set(keys)) == 4 * 9
    # the killed actor's block was retried from the 3 windows it had logged; the others ran once
    blocks = sorted((tmp_path / "ray.run.blocks").glob("block-*.run.stats.json"))
    resumed = [json.loads(p.read_text())["windows_resumed_from_log"] for p in blocks]
    assert sorted(resumed) == [0, 0, 0, 3]
