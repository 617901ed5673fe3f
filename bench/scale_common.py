"""What the scale benchmarks (`bench/scale_*.py`) share: synthetic data from the real TREC DL
passages and queries, a pipeline command run in its own process with its time and peak
memory, page-cache eviction for cold reads, and the result file.

Generated data goes under `/tmp/scale` (`--work`), never into the repository.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.shared_data import data_root  # data/shared, else ../shared

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DISTILLM_SHARED", data_root(REPO)))
TREC_DL = SHARED / "data" / "trec-dl"
WORK = Path("/tmp/scale")

# Samples this process's anonymous resident memory (RssAnon: heap, not the pages of
# memory-mapped files, which the page cache can drop) every 20 ms and keeps the peak.
# The largest such peak of any one child process (Ray's actors) is kept too.
_SAMPLER = (
    "import re, threading, time\n"
    "import psutil\n"
    "__peak_anon, __peak_child = [0], [0]\n"
    "def __anon(pid):\n"
    "    try:\n"
    "        return int(re.search(r'RssAnon:\\s+(\\d+) kB', open(f'/proc/{pid}/status').read())[1])\n"
    "    except (OSError, TypeError):\n"
    "        return 0\n"
    "def __sample():\n"
    "    me, n = psutil.Process(), 0\n"
    "    while True:\n"
    "        __peak_anon[0] = max(__peak_anon[0], __anon('self'))\n"
    "        if n % 10 == 0:\n"
    "            children = me.children(recursive=True)\n"
    "        __peak_child[0] = max([__peak_child[0], *(__anon(c.pid) for c in children)])\n"
    "        n += 1\n"
    "        time.sleep(0.02)\n"
    "threading.Thread(target=__sample, daemon=True).start()\n"
)
# What a measured process prints last: wall time, CPU time, peak RSS (VmHWM, which counts the
# touched pages of memory-mapped files too) and peak anonymous RSS. VmHWM, not ru_maxrss: after
# fork + exec, Linux's ru_maxrss keeps the parent's peak; VmHWM is the new process's own.
_REPORT = (
    "import json, re, resource, sys, time\n"
    "__status = open('/proc/self/status').read()\n"
    "__usage = resource.getrusage(resource.RUSAGE_SELF)\n"
    "__peak_anon[0] = max(__peak_anon[0], int(re.search(r'RssAnon:\\s+(\\d+) kB', __status)[1]))\n"
    "print('MEASURED ' + json.dumps({'seconds': time.perf_counter() - __start,"
    " 'cpu_seconds': __usage.ru_utime + __usage.ru_stime,"
    " 'peak_rss_mib': int(re.search(r'VmHWM:\\s+(\\d+) kB', __status)[1]) / 1024,"
    " 'peak_anon_mib': __peak_anon[0] / 1024, 'peak_child_anon_mib': __peak_child[0] / 1024}), file=sys.stderr)\n"
)
# Runs `distillm ARGV` in a fresh process.
_MEASURE = (
    _SAMPLER
    + "import sys, time\n"
    + "from pipeline.cli import main\n"
    + "__start = time.perf_counter()\n"
    + "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
    + "print('EXIT ' + str(rc or 0), file=sys.stderr)\n"
    + _REPORT
)


def measure_command(argv: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run `distillm ARGV` in its own process: seconds, cpu_seconds, peak_rss_mib, peak_anon_mib and
    peak_child_anon_mib (the largest of any one child process: Ray's workers).

    A command that fails stops the benchmark with its output."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    return _measured(done.stderr, done, f"distillm {' '.join(argv)}", must_exit_0=True)


def measure_python(code: str, *args: str) -> dict[str, Any]:
    """Run Python `code` in its own process (it prints one JSON object as its last stdout line
    starting with '{'): that object plus seconds, cpu_seconds, peak_rss_mib and peak_anon_mib."""
    wrapped = _SAMPLER + f"import json, sys, time\nsys.path[:0] = [{str(REPO)!r}, {str(REPO / 'bench')!r}]\n"
    wrapped += "__start = time.perf_counter()\n"
    wrapped += code + "\n" + _REPORT
    done = subprocess.run([sys.executable, "-c", wrapped, *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"measured code failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(next(line for line in reversed(done.stdout.splitlines()) if line.startswith("{")))
    return {**result, **_measured(done.stderr, done, "measured code")}


def _measured(stderr: str, done: subprocess.CompletedProcess, what: str, must_exit_0: bool = False) -> dict:
    lines = [line for line in stderr.splitlines() if line.startswith("MEASURED ")]
    exits = [line for line in stderr.splitlines() if line.startswith("EXIT ")]
    if not lines or (must_exit_0 and (not exits or exits[-1] != "EXIT 0")):
        raise SystemExit(f"{what} failed:\n{done.stdout[-3000:]}\n{stderr[-3000:]}")
    return {k: round(v, 3) for k, v in json.loads(lines[-1].removeprefix("MEASURED ")).items()}


def rss_mib() -> float:
    """This process's resident memory now (MiB)."""
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024


def evict_from_page_cache(*paths: Path) -> None:
    """Drop the files' pages from the page cache (posix_fadvise DONTNEED): the next read is cold.

    Only these files are evicted, not the whole cache (the machine is shared)."""
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages cannot be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def dl_passages() -> list[str]:
    """The texts of the 9,658 distinct passages of the TREC DL 2019/2020 BM25 top-100s, in file order."""
    from pipeline.contract.candidates import read_candidates

    texts: dict[str, str] = {}
    for name in ("retrieve_results_dl19.json", "retrieve_results_dl20.json"):
        for doc_id, passage in read_candidates(TREC_DL / name).passages.items():
            texts.setdefault(doc_id, " ".join(passage.text.split()))  # one line: no tab or newline inside
    return list(texts.values())


def real_queries() -> list[str]:
    """Real query texts: MS MARCO dev-small (6,980) and the TREC DL 2019/2020 topics."""
    texts = []
    for name in ("topics.msmarco-passage.dev-subset.txt", "topics.dl19-passage.txt", "topics.dl20.txt"):
        for line in (TREC_DL / name).read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                texts.append(" ".join(line.split("\t", 1)[1].split()))
    return texts


def disk_mib(path: Path) -> float:
    """Bytes on disk under path (a file or a folder), in MiB."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(f.stat().st_size for f in files) / 2**20, 1)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),  # shared machine: timings are noisy
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """bench/results/NAME.json with the machine and the date added."""
    path = REPO / "bench" / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {"benchmark": name, **result, "machine": machine(), "date": time.strftime("%Y-%m-%d")}
    path.write_text(json.dumps(full, indent=2) + "\n")
    return path
