"""The dataset on Zenodo, over its REST deposit API: `publish` and `fetch`
(`distillm publish`, `distillm fetch-dataset`: `pipeline.commands.publish`, `pipeline.commands.fetch_dataset`).

publish packs DIR as `NAME-V.tar.gz` plus `MANIFEST.sha256` (sha256sum format: the archive
and every file in it), creates a deposition (or a new version of RECORD, whose carried-over
files are deleted), uploads both to the deposition's bucket and checks each upload's md5
against the server's, sets the metadata from the dataset card, and publishes only with
--publish. fetch-dataset downloads a record's files, checks md5 (record) and sha256
(manifest), unpacks the archive and validates the dataset; it replaces an existing --out
only if that is an earlier fetch of the same record (or with --overwrite).

A record that is not an export (no MANIFEST.sha256), e.g. the published Rank-DistiLLM runs,
is downloaded file by file (or those --file names), each checked against the record's md5.
The deposition calls of publish are zenodo-client's (pipeline.dataset.deposition); fetching is
ours: zenodo-client's downloads need a token even for public records, go to its own cache
folder and check no checksum.

The sandbox (https://sandbox.zenodo.org) is the default; https://zenodo.org needs
--production. The token (ZENODO_TOKEN, or `token` in ~/.config/distillm/zenodo.toml) goes
only in an `Authorization: Bearer` header, only to the server's own host, and is redacted
from every message. 429 (after Retry-After) and 5xx answers are retried with exponential
backoff.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.infra.checksums import file_digest
from pipeline.infra.errors import InputError
from pipeline.infra.retry_after import retry_after_seconds

log = logging.getLogger(__name__)
SANDBOX, PRODUCTION = "https://sandbox.zenodo.org", "https://zenodo.org"
CONFIG = Path("~/.config/distillm/zenodo.toml")
_sleep = time.sleep  # tests may replace it


@dataclass(frozen=True)
class ZenodoServer:
    """Which server, with whose token and how patiently: `_client` opens a client for it."""

    base_url: str | None = None  # another server (overrides sandbox/production)
    production: bool = False  # https://zenodo.org; else the sandbox
    config: Path | None = None  # TOML with token and creators (default CONFIG)
    retries: int = 5  # retries on 429/5xx/connection errors
    backoff: float = 2.0  # first retry wait in seconds (doubles)


class ZenodoError(RuntimeError):
    """The server refused, or kept failing, or returned data that does not check out."""


class Zenodo:
    """A client for the few REST calls needed: token in a header, retries, no token in any message."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        retries: int = ZenodoServer.retries,
        backoff: float = ZenodoServer.backoff,
    ):
        import requests

        self.base_url, self.retries, self.backoff = base_url.rstrip("/"), retries, backoff
        self._host = urlsplit(self.base_url)[:2]
        self._token = token
        self._session = requests.Session()

    def redact(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def call(
        self, method: str, url: str, expect: tuple[int, ...], json: Any = None, upload: Path | None = None, stream=False
    ):
        """One request, retried on 429/5xx/connection errors; ZenodoError on any answer not in expect."""
        with contextlib.ExitStack() as stack:
            body = stack.enter_context(open(upload, "rb")) if upload is not None else None
            return self.request(method, url, expect=expect, json=json, data=body, stream=stream)

    def request(
        self,
        method: str,
        url: str,
        expect: tuple[int, ...] | None = None,
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        timeout: float = 300,
        stream: bool = False,
    ):
        """One request, retried on 429/5xx/connection errors (a file body is re-sent from its start);
        ZenodoError on any other answer not in expect (None: any 2xx). The token goes in a header, only to
        the server's own host."""
        import requests

        url = url if url.startswith(("http://", "https://")) else self.base_url + url
        headers = {"Accept": "application/json", **(headers or {})}
        if self._token and urlsplit(url)[:2] == self._host:  # never hand the token to another host
            headers["Authorization"] = f"Bearer {self._token}"
        if data is not None and hasattr(data, "read"):
            headers["Content-Type"] = "application/octet-stream"
        what = f"{method} {urlsplit(url).path}"
        for attempt in range(self.retries + 1):
            if hasattr(data, "seek"):
                data.seek(0)
            try:
                response = self._session.request(
                    method, url, json=json, data=data, headers=headers, params=params, timeout=timeout, stream=stream
                )
            except requests.RequestException as e:
                problem, wait = type(e).__name__, self.backoff * 2**attempt
            else:
                if response.status_code in expect if expect else 200 <= response.status_code < 300:
                    return response
                problem = f"HTTP {response.status_code}: {_message(response)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise ZenodoError(self.redact(f"{what}: {problem}"))
                wait = (
                    retry_after_seconds(response.headers.get("Retry-After"), 600.0)
                    if response.status_code == 429
                    else None
                )
                wait = self.backoff * 2**attempt if wait is None else wait
            if attempt == self.retries:
                raise ZenodoError(self.redact(f"{what}: {problem} (gave up after {attempt + 1} attempts)"))
            log.warning("%s", self.redact(f"{what}: {problem}; retry {attempt + 1}/{self.retries} in {wait:.1f} s"))
            _sleep(wait)
        raise AssertionError("unreachable")


def _message(response) -> str:
    """Zenodo's error message ({"message", "status", "errors": [{"field", "message"}]}), else the body's start."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if not isinstance(body, dict):
        return str(body)[:300]
    details = "; ".join(f"{e.get('field', '')}: {e.get('message', '')}" for e in body.get("errors") or [])
    return f"{body.get('message', '')}{f' ({details})' if details else ''}"[:500]


def build_archive(dataset: Path, name: str, version: str, dist: Path) -> tuple[Path, Path]:
    """`NAME-V.tar.gz` of every file in dataset (under NAME-V/, reproducible bytes) and its MANIFEST.sha256."""
    import gzip
    import tarfile

    stem = f"{name}-{version}"
    dist.mkdir(parents=True, exist_ok=True)
    archive, manifest = dist / f"{stem}.tar.gz", dist / "MANIFEST.sha256"
    files = sorted(p for p in dataset.rglob("*") if p.is_file())
    lines = []
    with (
        open(archive, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,  # mtime 0: same bytes every time
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in files:
            arcname = f"{stem}/{path.relative_to(dataset).as_posix()}"
            info = tar.gettarinfo(path, arcname)
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with open(path, "rb") as f:
                tar.addfile(info, f)
            lines.append(f"{file_digest(path)}  {arcname}\n")
    manifest.write_text(f"{file_digest(archive)}  {archive.name}\n" + "".join(lines))
    return archive, manifest


def publish(
    client: Zenodo,
    dataset: Path,
    version: str,
    creators: list[dict[str, str]],
    dist: Path | None = None,
    new_version_of: str | None = None,
    draft: str | None = None,
    publish: bool = False,
) -> dict[str, Any]:
    """Create (or continue) a deposition, replace its files, set metadata, publish if asked; returns a receipt.

    The archive and manifest go to `dist` (default DATASET/../dist); the deposition is a new
    version of the record `new_version_of`, the unpublished deposition `draft`, or a new one.

    The deposition calls (create, upload, new version, publish) are zenodo-client's, sent through
    client (pipeline.dataset.deposition); deleting carried-over files, listing the files and setting
    a draft's metadata are calls zenodo-client does not have, made with client directly.
    """
    import json

    from pipeline.dataset.dataset_card import zenodo_metadata
    from pipeline.dataset.deposition import deposition_api

    meta = json.loads((dataset / "metadata.json").read_text())
    metadata = zenodo_metadata(dataset / "README.md", version, creators)
    archive, manifest = build_archive(dataset, meta["name"], version, dist or dataset.parent / "dist")
    with deposition_api(client) as api:
        if new_version_of:
            draft = api.new_version(new_version_of, sleep=False).json()["links"]["latest_draft"]
            deposition = client.call("GET", draft, (200,)).json()
        elif draft:
            deposition = client.call("GET", f"/api/deposit/depositions/{draft}", (200,)).json()
        else:  # zenodo-client creates it with the metadata and reads it back
            deposition = api.create({"metadata": metadata}, paths=[], publish=False).json()
        links = deposition["links"]
        for old in deposition.get("files") or []:  # carried over from the previous version or upload
            client.call("DELETE", f"{links['files']}/{old['id']}", (204,))
            log.info("deleted carried-over file %s", old.get("filename"))
        uploaded = {}
        for path in (archive, manifest):
            local = file_digest(path, "md5")
            [answer] = api._upload_files(bucket=links["bucket"], paths=[path], timeout=3600)  # zenodo-client's upload
            checksum = answer.json().get("checksum")
            if checksum != f"md5:{local}":
                raise ZenodoError(f"upload of {path.name}: server checksum {checksum} != local md5:{local}")
            uploaded[path.name] = f"md5:{local}"
            log.info("uploaded %s (%d bytes, md5 %s)", path.name, path.stat().st_size, local)
        listed = {f["filename"]: f["checksum"] for f in client.call("GET", links["files"], (200,)).json()}
        if {k: v if v.startswith("md5:") else f"md5:{v}" for k, v in listed.items()} != uploaded:
            raise ZenodoError(f"deposition files {sorted(listed)} do not match the uploads {sorted(uploaded)}")
        client.call("PUT", links["self"], (200,), json={"metadata": metadata})  # zenodo-client has no such call
        receipt = {"base_url": client.base_url, "deposition": deposition["id"], "files": uploaded, "published": False}
        receipt["draft_html"] = links.get("html")
        if publish:
            done = api.publish(deposition["id"], sleep=False).json()
            receipt.update(published=True, record=done.get("record_id"), doi=done.get("doi"))
    (archive.parent / f"{archive.name}.zenodo.json").write_text(json.dumps(receipt, indent=2) + "\n")
    return receipt


def fetch(client: Zenodo, record: str, out: Path, overwrite: bool = False, patterns: list[str] | None = None) -> bool:
    """Download a record's files and check their md5; True if it was a distillm export.

    An export (a record with MANIFEST.sha256, as `distillm publish` makes) is checked against
    the manifest's sha256s and unpacked into out. Any other record, e.g. the published
    Rank-DistiLLM runs (zenodo.org records 12528410, 15131907), has its files, or those matching
    `patterns` (shell globs), downloaded into the folder out as they are.

    An existing out is replaced only if it is an earlier fetch of the same record from the
    same server (its receipt `OUT.zenodo.json` says so) or with overwrite; else InputError,
    before anything is downloaded. The receipt is written after each fetch.
    """
    import json

    receipt = out.with_name(out.name + ".zenodo.json")
    if out.exists() and not overwrite and not _earlier_fetch(out, receipt, client.base_url, record):
        raise InputError(
            out,
            None,
            f"exists and is not an earlier fetch of record {record} from {client.base_url} (no {receipt.name} "
            "saying so): refusing to replace it; remove it, choose another --out, or pass --overwrite",
        )
    files = client.call("GET", f"/api/records/{record}", (200,)).json().get("files", [])
    files = files.get("entries", files) if isinstance(files, dict) else files
    entries = list(files.values()) if isinstance(files, dict) else files
    export = any(_file_name(e) == "MANIFEST.sha256" for e in entries)
    if patterns:
        if export:
            raise ValueError(f"record {record} is a distillm export (MANIFEST.sha256): fetch it whole, without --file")
        entries = _matching(entries, patterns, record)
    work = out.with_name(out.name + ".download")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if export:
            unpacked = _download_and_verify(client, record, entries, work)
        else:
            unpacked = _download(client, record, entries, work / "files")
            log.info("record %s: %d file(s) (%d bytes), not a distillm export", record, len(entries), _size(entries))
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(unpacked, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    names = {_file_name(entry): entry.get("checksum") for entry in entries}
    receipt.write_text(
        json.dumps({"base_url": client.base_url, "record": str(record), "files": names}, indent=2) + "\n"
    )
    return export


def _file_name(entry: dict[str, Any]) -> str:
    return entry.get("key") or entry["filename"]


def _size(entries: list[dict[str, Any]]) -> int:
    return sum(int(e.get("size") or e.get("filesize") or 0) for e in entries)


def _matching(entries: list[dict[str, Any]], patterns: list[str], record: str) -> list[dict[str, Any]]:
    """The entries whose names match any pattern; ValueError naming the record's files if a pattern matches none."""
    from fnmatch import fnmatchcase

    names = [_file_name(e) for e in entries]
    for pattern in patterns:
        if not any(fnmatchcase(n, pattern) for n in names):
            raise ValueError(f"--file {pattern!r} matches no file of record {record}: it has {', '.join(names)}")
    return [e for e in entries if any(fnmatchcase(_file_name(e), pattern) for pattern in patterns)]


def _earlier_fetch(out: Path, receipt: Path, base_url: str, record: str) -> bool:
    """Whether out is an empty directory, or what an earlier fetch of this record from this server made."""
    import json

    if out.is_dir() and not any(out.iterdir()):
        return True
    try:
        earlier = json.loads(receipt.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(earlier, dict) and (earlier.get("base_url"), earlier.get("record")) == (base_url, str(record))


def _download(client: Zenodo, record: str, entries: list[dict[str, Any]], work: Path) -> Path:
    """Download the entries into work (created), each checked against the record's md5; returns work."""
    work.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        name = _file_name(entry)
        if Path(name).name != name or name.startswith("."):
            raise ZenodoError(f"record {record}: refusing file name {name!r}")
        response = client.call("GET", entry["links"].get("content") or entry["links"]["self"], (200,), stream=True)
        with open(work / name, "wb") as f:
            for chunk in response.iter_content(1 << 20):
                f.write(chunk)
        checksum, local = entry.get("checksum", ""), file_digest(work / name, "md5")
        if checksum.removeprefix("md5:") != local:
            raise ZenodoError(f"{name}: md5 {local} does not match the record's {checksum}")
    return work


def _download_and_verify(client: Zenodo, record: str, entries: list[dict[str, Any]], work: Path) -> Path:
    """Download into work, check md5s and the manifest's sha256s, unpack; returns the dataset directory."""
    import tarfile

    _download(client, record, entries, work)
    manifest = work / "MANIFEST.sha256"
    if not manifest.exists():
        raise ZenodoError(f"record {record} has no MANIFEST.sha256")
    expected = {}  # path -> sha256, from sha256sum's "DIGEST  PATH" lines
    for line in manifest.read_text().splitlines():
        digest, _, rel = line.partition("  ")
        expected[rel] = digest
    archives = [n for n in expected if "/" not in n]
    if len(archives) != 1 or not (work / archives[0]).exists():
        raise ZenodoError(f"record {record}: expected one archive named in MANIFEST.sha256, found {archives}")
    with tarfile.open(work / archives[0]) as tar:
        tar.extractall(work / "unpacked", filter="data")  # "data": no absolute paths, links or devices
    for rel, digest in expected.items():
        path = work / (rel if rel in archives else f"unpacked/{rel}")
        if not path.is_file() or file_digest(path) != digest:
            raise ZenodoError(f"{rel}: missing or its sha256 differs from MANIFEST.sha256")
    if sum(1 for p in (work / "unpacked").rglob("*") if p.is_file()) != len(expected) - 1:
        raise ZenodoError("the archive holds files that MANIFEST.sha256 does not list")
    dataset = work / "unpacked" / archives[0].removesuffix(".tar.gz")
    if not dataset.is_dir():
        raise ZenodoError(f"the archive has no top-level directory {dataset.name}")
    return dataset


def creators(specs: list[str], config: dict[str, Any]) -> list[dict[str, str]]:
    """ "Family, Given; Affiliation" strings (--creator), else `creators` from the config file."""
    given = [dict(zip(("name", "affiliation"), (s.strip() for s in c.split(";", 1)), strict=False)) for c in specs]
    return given or list(config.get("creators", []))


def _client(args: ZenodoServer, need_token: bool) -> tuple[Zenodo, dict[str, Any]]:
    """A client for the server `args` name, and the config file's contents (token, creators)."""
    import tomllib

    base = args.base_url or (PRODUCTION if args.production else SANDBOX)
    path = (args.config or CONFIG).expanduser()
    config: dict[str, Any] = {}
    if path.exists():
        try:
            config = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise InputError(path, None, f"invalid TOML: {e}") from None
    elif args.config:
        raise InputError(path, None, "config file not found")
    token = os.environ.get("ZENODO_TOKEN") or config.get("token")
    if need_token and not token:
        raise ValueError(f'no Zenodo token: set ZENODO_TOKEN or `token = "..."` in {path}')
    return Zenodo(base, token, retries=args.retries, backoff=args.backoff), config
