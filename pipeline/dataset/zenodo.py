"""`distillm publish` and `distillm fetch-dataset`: the dataset on Zenodo, over its REST deposit API.

    distillm publish DIR --version V [--publish] [--new-version-of RECORD | --draft ID]
    distillm fetch-dataset RECORD --out DIR

publish packs DIR as `NAME-V.tar.gz` plus `MANIFEST.sha256` (sha256sum format: the archive
and every file in it), creates a deposition (or a new version of RECORD, whose carried-over
files are deleted), uploads both to the deposition's bucket and checks each upload's md5
against the server's, sets the metadata from the dataset card, and publishes only with
--publish. fetch-dataset downloads a record's files, checks md5 (record) and sha256
(manifest), unpacks the archive and validates the dataset.

The sandbox (https://sandbox.zenodo.org) is the default; https://zenodo.org needs
--production. The token (ZENODO_TOKEN, or `token` in ~/.config/distillm/zenodo.toml) goes
only in an `Authorization: Bearer` header, only to the server's own host, and is redacted
from every message. 429 (after Retry-After) and 5xx answers are retried with exponential
backoff.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import InputError

log = logging.getLogger(__name__)
SANDBOX, PRODUCTION = "https://sandbox.zenodo.org", "https://zenodo.org"
CONFIG = Path("~/.config/distillm/zenodo.toml")
_sleep = time.sleep  # tests may replace it


class ZenodoError(RuntimeError):
    """The server refused, or kept failing, or returned data that does not check out."""


class Zenodo:
    """A client for the few REST calls needed: token in a header, retries, no token in any message."""

    def __init__(self, base_url: str, token: str | None = None, retries: int = 5, backoff: float = 2.0):
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
        """One request, retried on 429/5xx/connection errors; ZenodoError on any other answer."""
        import requests

        url = url if url.startswith(("http://", "https://")) else self.base_url + url
        headers = {"Accept": "application/json"}
        if self._token and urlsplit(url)[:2] == self._host:  # never hand the token to another host
            headers["Authorization"] = f"Bearer {self._token}"
        if upload is not None:
            headers["Content-Type"] = "application/octet-stream"
        what = f"{method} {urlsplit(url).path}"
        for attempt in range(self.retries + 1):
            try:
                with contextlib.ExitStack() as stack:  # a retry re-sends the file from its start
                    body = stack.enter_context(open(upload, "rb")) if upload is not None else None
                    response = self._session.request(
                        method, url, json=json, data=body, headers=headers, timeout=300, stream=stream
                    )
            except requests.RequestException as e:
                problem, wait = type(e).__name__, self.backoff * 2**attempt
            else:
                if response.status_code in expect:
                    return response
                problem = f"HTTP {response.status_code}: {_message(response)}"
                if response.status_code != 429 and response.status_code < 500:
                    raise ZenodoError(self.redact(f"{what}: {problem}"))
                wait = _retry_after(response) if response.status_code == 429 else None
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


def _retry_after(response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped at 10 minutes."""
    from email.utils import parsedate_to_datetime

    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), 600.0)


def file_digest(path: Path, name: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, name).hexdigest()


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
            lines.append(f"{file_digest(path, 'sha256')}  {arcname}\n")
    manifest.write_text(f"{file_digest(archive, 'sha256')}  {archive.name}\n" + "".join(lines))
    return archive, manifest


def publish(client: Zenodo, dataset: Path, version: str, creators: list[dict[str, str]], args) -> dict[str, Any]:
    """Create (or continue) a deposition, replace its files, set metadata, publish if asked; returns a receipt."""
    import json

    from pipeline.dataset.card import zenodo_metadata

    meta = json.loads((dataset / "metadata.json").read_text())
    metadata = zenodo_metadata(dataset / "README.md", version, creators)
    archive, manifest = build_archive(dataset, meta["name"], version, args.dist or dataset.parent / "dist")
    if args.new_version_of:
        done = client.call("POST", f"/api/deposit/depositions/{args.new_version_of}/actions/newversion", (201,))
        deposition = client.call("GET", done.json()["links"]["latest_draft"], (200,)).json()
    elif args.draft:
        deposition = client.call("GET", f"/api/deposit/depositions/{args.draft}", (200,)).json()
    else:
        deposition = client.call("POST", "/api/deposit/depositions", (201,), json={}).json()
    links = deposition["links"]
    for old in client.call("GET", links["files"], (200,)).json():  # carried over from the previous version
        client.call("DELETE", f"{links['files']}/{old['id']}", (204,))
        log.info("deleted carried-over file %s", old.get("filename"))
    uploaded = {}
    for path in (archive, manifest):
        local = file_digest(path, "md5")
        answer = client.call("PUT", f"{links['bucket']}/{path.name}", (200, 201), upload=path).json()
        if answer.get("checksum") != f"md5:{local}":
            raise ZenodoError(f"upload of {path.name}: server checksum {answer.get('checksum')} != local md5:{local}")
        uploaded[path.name] = f"md5:{local}"
        log.info("uploaded %s (%d bytes, md5 %s)", path.name, path.stat().st_size, local)
    listed = {f["filename"]: f["checksum"] for f in client.call("GET", links["files"], (200,)).json()}
    if {k: v if v.startswith("md5:") else f"md5:{v}" for k, v in listed.items()} != uploaded:
        raise ZenodoError(f"deposition files {sorted(listed)} do not match the uploads {sorted(uploaded)}")
    client.call("PUT", links["self"], (200,), json={"metadata": metadata})
    receipt = {"base_url": client.base_url, "deposition": deposition["id"], "files": uploaded, "published": False}
    receipt["draft_html"] = links.get("html")
    if args.publish:
        done = client.call("POST", links["publish"], (202,)).json()
        receipt.update(published=True, record=done.get("record_id"), doi=done.get("doi"))
    (archive.parent / f"{archive.name}.zenodo.json").write_text(json.dumps(receipt, indent=2) + "\n")
    return receipt


def fetch(client: Zenodo, record: str, out: Path) -> Path:
    """Download a record's files, check md5 and sha256, unpack the archive into out."""
    files = client.call("GET", f"/api/records/{record}", (200,)).json().get("files", [])
    files = files.get("entries", files) if isinstance(files, dict) else files
    entries = list(files.values()) if isinstance(files, dict) else files
    work = out.with_name(out.name + ".download")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        unpacked = _download_and_verify(client, record, entries, work)
        if out.exists():
            shutil.rmtree(out)
        os.replace(unpacked, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _download_and_verify(client: Zenodo, record: str, entries: list[dict[str, Any]], work: Path) -> Path:
    """Download into work, check md5s and the manifest's sha256s, unpack; returns the dataset directory."""
    import tarfile

    for entry in entries:
        name = entry.get("key") or entry["filename"]
        if Path(name).name != name or name.startswith("."):
            raise ZenodoError(f"record {record}: refusing file name {name!r}")
        response = client.call("GET", entry["links"].get("content") or entry["links"]["self"], (200,), stream=True)
        with open(work / name, "wb") as f:
            for chunk in response.iter_content(1 << 20):
                f.write(chunk)
        checksum, local = entry.get("checksum", ""), file_digest(work / name, "md5")
        if checksum.removeprefix("md5:") != local:
            raise ZenodoError(f"{name}: md5 {local} does not match the record's {checksum}")
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
        if not path.is_file() or file_digest(path, "sha256") != digest:
            raise ZenodoError(f"{rel}: missing or its sha256 differs from MANIFEST.sha256")
    if sum(1 for p in (work / "unpacked").rglob("*") if p.is_file()) != len(expected) - 1:
        raise ZenodoError("the archive holds files that MANIFEST.sha256 does not list")
    dataset = work / "unpacked" / archives[0].removesuffix(".tar.gz")
    if not dataset.is_dir():
        raise ZenodoError(f"the archive has no top-level directory {dataset.name}")
    return dataset


def _creators(args: argparse.Namespace, config: dict[str, Any]) -> list[dict[str, str]]:
    """--creator "Family, Given; Affiliation" (repeatable), else `creators` from the config file."""
    creators = [
        dict(zip(("name", "affiliation"), (s.strip() for s in c.split(";", 1)), strict=False)) for c in args.creator
    ]
    return creators or list(config.get("creators", []))


def _client(args: argparse.Namespace, need_token: bool) -> tuple[Zenodo, dict[str, Any]]:
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


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("publish", help="upload a dataset to Zenodo (sandbox unless --production)")
    p.add_argument("dir", type=Path, help="dataset directory (distillm export)")
    p.add_argument("--version", required=True, help="dataset version, e.g. 1.0.0")
    p.add_argument("--publish", action="store_true", help="publish (otherwise the deposition stays a draft)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--new-version-of", metavar="RECORD_ID", help="make a new version of this published record")
    which.add_argument("--draft", metavar="DEPOSITION_ID", help="continue this unpublished deposition")
    p.add_argument("--creator", action="append", default=[], help='"Family, Given; Affiliation" (repeatable)')
    p.add_argument("--dist", type=Path, help="where the archive and manifest go (default DIR/../dist)")
    q = subparsers.add_parser("fetch-dataset", help="download a published dataset version, verify, validate")
    q.add_argument("record", help="Zenodo record id")
    q.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    for parser, func in ((p, _publish_main), (q, _fetch_main)):
        server = parser.add_mutually_exclusive_group()
        server.add_argument("--sandbox", action="store_true", help="https://sandbox.zenodo.org (the default)")
        server.add_argument("--production", action="store_true", help="https://zenodo.org")
        parser.add_argument("--base-url", help="another server (overrides --sandbox/--production)")
        parser.add_argument("--config", type=Path, help=f"TOML with token and creators (default {CONFIG})")
        parser.add_argument("--retries", type=int, default=5, help="retries on 429/5xx/connection errors")
        parser.add_argument("--backoff", type=float, default=2.0, help="first retry wait in seconds (doubles)")
        parser.set_defaults(func=func)


def _publish_main(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[\w.+-]+", args.version):
        raise ValueError(f"--version {args.version!r}: use letters, digits, '.', '+', '-', '_' only")
    if not (args.dir / "metadata.json").exists() or not (args.dir / "README.md").exists():
        raise InputError(args.dir, None, "not a dataset directory (no metadata.json / README.md)")
    client, config = _client(args, need_token=True)
    creators = _creators(args, config)
    if not creators:
        raise ValueError("Zenodo needs creators: --creator 'Family, Given; Affiliation' or `creators` in the config")
    try:
        receipt = publish(client, args.dir, args.version, creators, args)
    except ZenodoError as e:
        print(f"distillm publish: error: {client.redact(str(e))}", file=sys.stderr)
        return 1
    state = (
        f"published: record {receipt['record']}, DOI {receipt['doi']}"
        if receipt["published"]
        else f"draft, not published: review it at {receipt['draft_html']}, then publish there or with --draft ID --publish"
    )
    print(f"deposition {receipt['deposition']} on {client.base_url}: {state}")
    return 0


def _fetch_main(args: argparse.Namespace) -> int:
    from pipeline.dataset.validate import validate_dataset

    client, _ = _client(args, need_token=False)
    try:
        out = fetch(client, args.record, args.out)
    except ZenodoError as e:
        print(f"distillm fetch-dataset: error: {client.redact(str(e))}", file=sys.stderr)
        return 1
    summary, problems = validate_dataset(out)
    for problem in problems:
        print(f"{problem.qid}\t{problem.doc_id}\t{problem.message}")
    print(f"{out}: {'INVALID' if problems else 'valid'}: {summary['queries']} queries, {summary['rows']} rows")
    return 2 if problems else 0
