"""Running lightning-ir itself, in its own environment (.venv-lir, `make setup-lightning-ir`), offline.

lightning-ir 0.0.6 needs transformers<5 and the pipeline transformers 5, so the tests hand it jobs
(tests/lightning_ir_side/side.py) in a subprocess of `.venv-lir/bin/python` and read back JSON. The
subprocess has no network: HTTP(S) proxies point at a closed port, Hugging Face is offline and
IR_DATASETS_HOME is empty, so anything lightning-ir would fetch fails instead of passing unnoticed.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIR_PYTHON = ROOT / ".venv-lir" / "bin" / "python"
SIDE = Path(__file__).with_name("lightning_ir_side") / "side.py"
NO_NETWORK = "http://127.0.0.1:9"  # the discard port: nothing listens, every request fails at once


def lightning_ir(jobs: list[dict[str, Any]], work: Path, timeout: int = 300) -> list[dict[str, Any]]:
    """Run the jobs in lightning-ir's environment; their results, in order."""
    if not LIR_PYTHON.exists():
        pytest.fail(f"{LIR_PYTHON} is missing: run `make setup-lightning-ir` (make test builds it)")
    work.mkdir(parents=True, exist_ok=True)
    (work / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(work / "hf"),
        IR_DATASETS_HOME=str(work / "ir_datasets"),
        HTTP_PROXY=NO_NETWORK,
        HTTPS_PROXY=NO_NETWORK,
        http_proxy=NO_NETWORK,
        https_proxy=NO_NETWORK,
        NO_PROXY="",
        no_proxy="",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    result = subprocess.run(
        [str(LIR_PYTHON), str(SIDE), str(work / "jobs.json"), str(work / "results.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(f"lightning-ir failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads((work / "results.json").read_text())
