"""`distillm data fetch` against a local HTTP server standing in for raw.githubusercontent.com.

The server (real HTTP/1.1 on 127.0.0.1, with `Range` support) serves the real files of the data
root under the URL paths the manifest names, records every request, and can drop a connection
half-way through a file. Most tests use three small manifest entries; the fresh-clone test
serves all of them.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.infra.checksums import file_digest as sha256_of
from pipeline.infra.errors import InputError
from pipeline.shared_data import DataFile, data_root, fetch, load_manifest, root_problems
from tests.conftest import REPO, SHARED_DATA
from tests.data_mirror import Mirror, serve, url_path

ROOT = SHARED_DATA.parent  # the data root the tests read: data/, reference/
MANIFEST = load_manifest()
SMALL = {
    "data/trec-dl/topics.dl19-passage.txt",
    "data/scifact/qrels_scifact_beir_test.json",
    "reference/teacher_runs/llmgar_pyterrier/dl19.bm25_zephyr.c100.res.gz",  # its URL path has %3E%3E
}
SUBSET = [f for f in MANIFEST if f.path in SMALL]
GZ = next(f for f in SUBSET if f.path.endswith(".gz"))


@pytest.fixture
def mirror():
    missing = [f.path for f in MANIFEST if f.url and not (ROOT / f.path).is_file()]
    if missing:
        pytest.fail(f"data files not found under {ROOT}: {missing[:3]} (run `distillm data fetch`)")
    server, thread = serve({url_path(f): ROOT / f.path for f in MANIFEST if f.url})
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A checkout with no `shared` folder beside it."""
    path = tmp_path / "repo"
    path.mkdir()
    (path / "pyproject.toml").write_text("")
    return path


def fetch_subset(repo: Path, cache: Path, mirror: Mirror, files: list[DataFile] = SUBSET, **kw):
    kw = {"retries": 2, "backoff": 0.0, "progress": False, **kw}
    return fetch(repo, cache=cache, mirror=mirror.url, files=files, **kw)


def assert_linked_and_verified(repo: Path, root: Path, files: list[DataFile]) -> None:
    link = repo / "data" / "shared"
    assert link.is_symlink() and link.resolve() == root.resolve()
    for f in files:
        assert sha256_of(link / f.path) == f.sha256, f.path
    assert not list(root.rglob("*.part"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_manifest_lists_every_file_of_the_data_root_with_its_size_and_sha256():
    on_disk = {
        p.relative_to(ROOT).as_posix()
        for folder in ("data/trec-dl", "data/scifact", "reference/teacher_runs")
        for p in (ROOT / folder).rglob("*")
        if p.is_file() and not p.name.endswith(".part")
    }
    listed = {f.path for f in MANIFEST}
    without_url = {f.path for f in MANIFEST if f.url is None}
    assert without_url == {"reference/teacher_runs/rankgpt_gpt35/dl19_run2.txt"}
    assert on_disk <= listed
    assert listed - on_disk <= without_url  # a downloaded root lacks only what has no URL
    assert root_problems(ROOT, [f for f in MANIFEST if f.path in on_disk]) == []
    pinned = re.compile(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/\S+")
    assert [f.path for f in MANIFEST if f.url and not pinned.fullmatch(f.url)] == []
    assert all(f.licence for f in MANIFEST)


def test_a_fresh_cache_is_filled_verified_and_linked(repo: Path, tmp_path: Path, mirror: Mirror):
    cache = tmp_path / "cache"
    result = fetch_subset(repo, cache, mirror)
    assert result.root == cache and result.downloaded == [f.path for f in SUBSET]
    assert sorted(mirror.requests) == sorted((url_path(f), None) for f in SUBSET)
    assert_linked_and_verified(repo, cache, SUBSET)

    again = fetch_subset(repo, cache, mirror)  # everything is there: nothing is asked for
    assert again.downloaded == [] and len(mirror.requests) == len(SUBSET)


def test_benchmarks_read_the_fetched_root_else_shared_beside_the_checkout(repo: Path, tmp_path: Path, mirror: Mirror):
    assert data_root(repo) == repo.parent / "shared"  # nothing fetched yet
    cache = tmp_path / "cache"
    fetch_subset(repo, cache, mirror)
    assert data_root(repo) == cache.resolve()


def test_a_corrupted_file_is_detected_and_fetched_again(repo: Path, tmp_path: Path, mirror: Mirror):
    cache = tmp_path / "cache"
    fetch_subset(repo, cache, mirror)
    target = cache / GZ.path
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes
    target.write_bytes(data)
    mirror.requests.clear()

    result = fetch_subset(repo, cache, mirror)
    assert result.downloaded == [GZ.path]
    assert mirror.requests == [(url_path(GZ), None)]
    assert_linked_and_verified(repo, cache, SUBSET)


def test_a_dropped_connection_resumes_with_a_range_request(repo: Path, tmp_path: Path, mirror: Mirror):
    cache = tmp_path / "cache"
    mirror.drop_after[url_path(GZ)] = 10_000
    result = fetch_subset(repo, cache, mirror, files=[GZ])
    assert result.downloaded == [GZ.path]
    assert mirror.requests == [(url_path(GZ), None), (url_path(GZ), "bytes=10000-")]
    assert_linked_and_verified(repo, cache, [GZ])


def test_a_part_file_left_behind_is_resumed(repo: Path, tmp_path: Path, mirror: Mirror):
    cache = tmp_path / "cache"
    part = cache / (GZ.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes((ROOT / GZ.path).read_bytes()[:12_345])  # an earlier run killed half-way
    fetch_subset(repo, cache, mirror, files=[GZ])
    assert mirror.requests == [(url_path(GZ), "bytes=12345-")]
    assert_linked_and_verified(repo, cache, [GZ])


def test_a_resumed_file_with_the_wrong_checksum_is_fetched_once_more_from_the_start(
    repo: Path, tmp_path: Path, mirror: Mirror
):
    cache = tmp_path / "cache"
    part = cache / (GZ.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 5_000)  # not the file's first bytes
    fetch_subset(repo, cache, mirror, files=[GZ])
    assert mirror.requests == [(url_path(GZ), "bytes=5000-"), (url_path(GZ), None)]
    assert_linked_and_verified(repo, cache, [GZ])


def test_an_unreachable_source_fails_naming_the_file_and_url(repo: Path, tmp_path: Path):
    port = closed_port()
    f = SUBSET[0]
    with pytest.raises(InputError) as error:
        fetch(repo, cache=tmp_path / "cache", mirror=f"http://127.0.0.1:{port}", files=[f], retries=1, backoff=0.0)
    message = str(error.value)
    assert message.startswith(f"{f.path}: cannot download http://127.0.0.1:{port}{url_path(f)}: ")
    assert "tried 2 times" in message
    assert not (repo / "data" / "shared").exists()


def test_the_cli_exits_2_naming_the_url_it_could_not_reach(repo: Path, tmp_path: Path, capsys):
    port = closed_port()
    argv = ["data", "fetch", "--repo", str(repo), "--cache", str(tmp_path / "cache")]
    argv += ["--mirror", f"http://127.0.0.1:{port}", "--retries", "0", "--no-progress"]
    assert main(argv) == 2
    first = MANIFEST[0]
    assert f"{first.path}: cannot download http://127.0.0.1:{port}{url_path(first)}" in capsys.readouterr().err


def test_a_missing_file_on_the_server_is_not_retried(repo: Path, tmp_path: Path, mirror: Mirror):
    del mirror.files[url_path(GZ)]
    with pytest.raises(InputError, match=re.escape(f"cannot download {mirror.url}{url_path(GZ)}: HTTP 404")):
        fetch_subset(repo, tmp_path / "cache", mirror, files=[GZ])
    assert len(mirror.requests) == 1


def test_a_download_with_other_bytes_is_refused(repo: Path, tmp_path: Path, mirror: Mirror):
    cache = tmp_path / "cache"
    mirror.files[url_path(GZ)] = b"x" * GZ.size
    with pytest.raises(InputError) as error:
        fetch_subset(repo, cache, mirror, files=[GZ])
    message = str(error.value)
    assert message.startswith(f"{GZ.path}: the download from {mirror.url}{url_path(GZ)} is not the expected file")
    assert hashlib.sha256(b"x" * GZ.size).hexdigest() in message and GZ.sha256 in message
    assert not (cache / GZ.path).exists() and not list(cache.rglob("*.part"))


def _copy_subset(root: Path) -> None:
    for f in SUBSET:
        (root / f.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / f.path, root / f.path)


def test_a_verified_shared_folder_beside_the_checkout_is_used_without_downloading(
    repo: Path, tmp_path: Path, mirror: Mirror
):
    beside = tmp_path / "shared"
    _copy_subset(beside)
    result = fetch_subset(repo, tmp_path / "cache", mirror)
    assert result.root.resolve() == beside.resolve() and result.downloaded == []
    assert mirror.requests == []
    assert not (tmp_path / "cache").exists()
    assert_linked_and_verified(repo, beside, SUBSET)


def test_an_incomplete_shared_folder_falls_back_to_the_cache(repo: Path, tmp_path: Path, mirror: Mirror):
    beside = tmp_path / "shared"
    _copy_subset(beside)
    (beside / GZ.path).write_bytes(b"truncated")
    result = fetch_subset(repo, tmp_path / "cache", mirror)
    assert result.root == tmp_path / "cache"
    assert len(mirror.requests) == len(SUBSET)
    assert_linked_and_verified(repo, tmp_path / "cache", SUBSET)


def test_from_a_folder_that_lacks_a_file_is_an_error(repo: Path, tmp_path: Path, mirror: Mirror):
    source = tmp_path / "elsewhere"
    _copy_subset(source)
    (source / GZ.path).unlink()
    with pytest.raises(InputError, match=re.escape(f"{GZ.path}: missing")):
        fetch_subset(repo, tmp_path / "cache", mirror, source=source)
    assert mirror.requests == []


def test_a_real_folder_at_the_link_is_not_replaced(repo: Path, tmp_path: Path, mirror: Mirror):
    (repo / "data" / "shared").mkdir(parents=True)
    with pytest.raises(InputError, match="is not a symbolic link"):
        fetch_subset(repo, tmp_path / "cache", mirror)


def test_a_fresh_clone_without_shared_gets_every_file(tmp_path: Path, mirror: Mirror):
    """A checkout's code (the package with its manifest, pyproject.toml) with no `shared` beside
    it and no `data/`: `python -m pipeline data fetch` there downloads every file of the manifest
    (the clone's own package runs: `-m` puts its folder first on the path)."""
    clone, cache = tmp_path / "clone", tmp_path / "cache"
    shutil.copytree(REPO / "pipeline", clone / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", clone / "pyproject.toml")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DISTILLM_DATA_MIRROR": mirror.url}
    env["DISTILLM_DATA_CACHE"] = str(cache)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "data", "fetch", "--no-progress"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    with_url = [f for f in MANIFEST if f.url]
    assert sorted(path for path, _ in mirror.requests) == sorted(url_path(f) for f in with_url)
    assert_linked_and_verified(clone, cache, with_url)
    assert "rankgpt_gpt35/dl19_run2.txt: no public URL is known" in done.stderr
