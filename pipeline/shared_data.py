"""`distillm data fetch`: the public data of the tests and the demo, linked at `data/shared`.

The manifest `pipeline/data_sources.toml` lists every file the tests, the demo and the benchmarks
read: its place under the data root (`data/trec-dl/...`, `data/scifact/...`,
`reference/teacher_runs/...`), a raw URL at a pinned commit, its size, sha256 and licence.
`fetch` then

1. uses `../shared` beside the checkout (or `--from DIR`) as the data root if it holds every
   file with the right sha256: nothing is downloaded (CI machines);
2. otherwise fills a cache outside the repository (`--cache`, `$DISTILLM_DATA_CACHE`, default
   `~/.cache/distillm/data`): files there with the right sha256 are kept, missing or corrupt ones
   are downloaded (resumable and checked, `pipeline/infra/download.py`);
3. points the symbolic link `data/shared` in the checkout at that root, so that the tests and
   `dvc repro` read `data/shared/data/...` and `data/shared/reference/...` on every machine.

`--mirror URL` (or `$DISTILLM_DATA_MIRROR`) replaces the scheme and host of every URL and keeps
its path: a mirror of raw.githubusercontent.com, or the tests' local server.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pipeline.infra.checksums import file_digest
from pipeline.infra.download import download
from pipeline.infra.errors import InputError

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("data_sources.toml")
LINK = Path("data") / "shared"  # in the checkout
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data root, '/'-separated
    url: str | None  # None: no public URL is known; the file must already be in a root
    size: int
    sha256: str
    licence: str


@dataclass
class FetchResult:
    root: Path  # the data root that `data/shared` now points at
    link: Path
    downloaded: list[str] = field(default_factory=list)  # manifest paths fetched this time
    unavailable: list[str] = field(default_factory=list)  # not in the root and without a URL


def load_manifest(path: Path = MANIFEST) -> list[DataFile]:
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("file", [])
    except tomllib.TOMLDecodeError as e:
        raise InputError(path, None, f"not valid TOML: {e}") from e
    files = []
    for number, entry in enumerate(entries, 1):
        where = f"[[file]] number {number}"
        rel = entry.get("path", "")
        parts = PurePosixPath(rel).parts
        if not rel or rel.startswith("/") or ".." in parts:
            raise InputError(path, None, f"{where}: path {rel!r} must be relative, inside the data root")
        if not isinstance(entry.get("size"), int) or not SHA256.fullmatch(str(entry.get("sha256", ""))):
            raise InputError(path, None, f"{where} ({rel}): needs an integer size and a 64-hex-digit sha256")
        files.append(DataFile(rel, entry.get("url") or None, entry["size"], entry["sha256"], entry.get("licence", "")))
    return files


def root_problems(root: Path, files: list[DataFile]) -> list[str]:
    """One line per manifest file that `root` lacks or holds with other bytes; [] if it has them all."""
    problems = []
    for f in files:
        path = root / f.path
        if not path.is_file():
            problems.append(f"{f.path}: missing")
        elif path.stat().st_size != f.size:
            problems.append(f"{f.path}: {path.stat().st_size} bytes, expected {f.size}")
        elif file_digest(path) != f.sha256:
            problems.append(f"{f.path}: sha256 differs from the manifest")
    return problems


def data_root(repo: Path) -> Path:
    """The data root the checkout reads: `data/shared` once `distillm data fetch` made it, else
    `../shared` beside the checkout. Benchmarks take it as their default."""
    linked = repo / LINK
    return linked.resolve() if linked.is_dir() else repo.parent / "shared"


def default_cache() -> Path:
    if os.environ.get("DISTILLM_DATA_CACHE"):
        return Path(os.environ["DISTILLM_DATA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "distillm" / "data"


def mirrored(url: str, mirror: str | None) -> str:
    """`url` with its scheme and host (and port) replaced by `mirror`'s; its path is kept."""
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def fill_cache(
    cache: Path,
    files: list[DataFile],
    *,
    mirror: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = True,
) -> FetchResult:
    """Make `cache` a data root: keep the files it holds with the right sha256, download the rest."""
    cache.mkdir(parents=True, exist_ok=True)
    result = FetchResult(root=cache, link=Path())
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two fetches at once (make -j) take turns
        for f in files:
            dest = cache / f.path
            if dest.is_file():
                if dest.stat().st_size == f.size and file_digest(dest) == f.sha256:
                    continue
                log.warning("%s: not the expected bytes (size or sha256), fetching it again", dest)
                dest.unlink()
            if f.url is None:
                result.unavailable.append(f.path)
                continue
            url = mirrored(f.url, mirror)
            log.info("downloading %s (%s bytes) from %s", f.path, f"{f.size:,}", url)
            download(
                url,
                dest,
                size=f.size,
                sha256=f.sha256,
                name=f.path,
                retries=retries,
                backoff=backoff,
                progress=progress,
            )
            result.downloaded.append(f.path)
    return result


def link_root(repo: Path, root: Path) -> Path:
    """Point `REPO/data/shared` at `root` (replacing an older link, never a real folder)."""
    link = repo / LINK
    target = root.resolve()
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return link
    elif link.exists():
        raise InputError(link, None, "exists and is not a symbolic link: move it away, `distillm data fetch` links it")
    tmp = link.with_name(f".{link.name}.link-tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)  # atomic: readers see the old root or the new one
    return link


def fetch(
    repo: Path,
    *,
    source: Path | None = None,
    cache: Path | None = None,
    mirror: str | None = None,
    files: list[DataFile] | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = True,
) -> FetchResult:
    """Find or build a data root holding `files` (default: the whole manifest) and link it at `REPO/data/shared`.

    `source`: a root that must hold every file (an error otherwise); default: `../shared` beside
    `repo` when it holds every file, else the download cache."""
    files = load_manifest() if files is None else files
    if source is not None:
        problems = root_problems(source, files)
        if problems:
            raise InputError(
                source, None, f"{len(problems)} data file(s) missing or different: {'; '.join(problems[:3])}"
            )
        return FetchResult(root=source, link=link_root(repo, source))
    beside = repo.resolve().parent / "shared"
    if beside.is_dir():
        problems = root_problems(beside, files)
        if not problems:
            return FetchResult(root=beside, link=link_root(repo, beside))
        log.warning("%s lacks %d data file(s) (%s): using the download cache", beside, len(problems), problems[0])
    cache = default_cache() if cache is None else cache
    mirror = os.environ.get("DISTILLM_DATA_MIRROR") if mirror is None else mirror
    result = fill_cache(cache, files, mirror=mirror, retries=retries, backoff=backoff, progress=progress)
    result.link = link_root(repo, cache)
    return result
