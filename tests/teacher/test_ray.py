"""The teacher on a local Ray instance (2 CPUs): same output as one process, and a killed actor
costs nothing but time."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import ray

from pipeline.cli import main
from tests.teacher.conftest import dl19_inputs, log_records


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


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


@pytest.mark.engine
def test_ray_blocks_equal_a_single_process_run(local_ray, dl_store: Path, rankvicuna_dl19_log: Path, tmp_path: Path):
    backend = ["--backend", f"replay:{rankvicuna_dl19_log}", "--prompt", "rank_vicuna"]
    rerank(dl_store, tmp_path / "single.run", backend)
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
        "10",
    )
    assert (tmp_path / "ray.run").read_text() == (tmp_path / "single.run").read_text()
    assert log_records(tmp_path / "ray.run") == log_records(tmp_path / "single.run")
    assert len(list((tmp_path / "ray.run.blocks").glob("block-*.run"))) == 5  # 43 queries in blocks of 10
    # a second run finds every block done and only merges
    before = (tmp_path / "ray.run.blocks" / "block-00000.run.log.jsonl").stat().st_mtime_ns
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
        "10",
    )
    assert (tmp_path / "ray.run.blocks" / "block-00000.run.log.jsonl").stat().st_mtime_ns == before


@pytest.mark.timeout(1800)
@pytest.mark.engine
def test_killed_actor_is_retried_without_loss(local_ray, dl_store: Path, tiny_mistral: Path, tmp_path: Path):
    import threading

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
    killed, finished = [], threading.Event()

    def kill_one_actor_mid_block() -> None:
        while not finished.is_set() and not killed:  # no deadline: it looks until the run is over
            logs = list((tmp_path / "ray.run.blocks").glob("*.log.jsonl"))
            if any(1 <= len(p.read_bytes().splitlines()) < 9 for p in logs):
                for proc in psutil.process_iter(["cmdline"]):  # Ray titles actor processes ray::MapWorker(...)
                    if "MapWorker(MapBatches(BlockRunner))" in " ".join(proc.info["cmdline"] or []):
                        os.kill(proc.pid, signal.SIGKILL)
                        killed.append(proc.pid)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor_mid_block)
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
    assert killed, "no actor was killed mid-block"
    assert (tmp_path / "ray.run").read_text() == (tmp_path / "single.run").read_text()
    keys = [(r["qid"], r["window"]) for r in log_records(tmp_path / "ray.run")]
    assert len(keys) == len(set(keys)) == 4 * 9
