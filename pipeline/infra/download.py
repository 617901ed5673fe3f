"""Download one file over HTTP(S), resumably, and accept it only if its sha256 is the expected one.

The bytes go to `DEST.part` first. An interrupted transfer (a dropped connection, a killed
process) leaves the `.part` behind, and the next attempt asks only for the rest with an HTTP
`Range` request; a server that ignores the range sends the whole file again, which is fine.
Dropped connections, timeouts and server errors (5xx, 408, 429) are retried with a growing pause;
a missing file (404 and other 4xx) is not. Only a complete file with the right sha256 is renamed to
DEST. Every failure is an InputError naming the file and the URL.
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from pipeline.infra.checksums import file_digest
from pipeline.infra.errors import InputError

CHUNK = 1 << 16
RETRIED_HTTP_STATUSES = {408, 429, 500, 502, 503, 504}


class _Retry(Exception):
    """A failure worth another attempt (the transfer resumes from what the .part holds)."""


def download(
    url: str,
    dest: Path,
    *,
    size: int,
    sha256: str,
    name: str | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> None:
    """Fetch `url` into `dest` (via `dest.part`, resuming it) and check its size and sha256.

    `name` is what errors call the file (default: `dest`); `retries` further attempts follow a
    failed one after `backoff`, 2 x `backoff`, ... seconds."""
    name, retries = name or str(dest), max(retries, 0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for fresh_start in (False, True):
        if fresh_start:  # the resumed bytes may be what was wrong: once more from the first byte
            part.unlink(missing_ok=True)
        resumed = _transfer(url, part, size, name, retries, backoff, timeout, progress)
        got_size, got_sha = part.stat().st_size, file_digest(part)
        if got_size == size and got_sha == sha256:
            os.replace(part, dest)
            return
        if not resumed or fresh_start:
            part.unlink(missing_ok=True)
            raise InputError(
                name,
                None,
                f"the download from {url} is not the expected file: {got_size} bytes with sha256 {got_sha}, "
                f"expected {size} bytes with sha256 {sha256}",
            )


def _transfer(
    url: str, part: Path, size: int, name: str, retries: int, backoff: float, timeout: float, progress: bool
) -> bool:
    """Fill `part` up to `size` bytes, with retries; True if some bytes came from an earlier attempt."""
    resumed = False
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if have > size:  # longer than the file can be: not ours
            part.unlink()
            have = 0
        if have == size:  # a complete .part from an earlier run, not yet checked
            return True
        resumed = resumed or have > 0
        try:
            _request_rest(url, part, have, size, name, timeout, progress)
            return resumed
        except _Retry as e:
            reason = str(e)
        if attempt < retries:
            time.sleep(backoff * 2**attempt)
    raise InputError(name, None, f"cannot download {url}: {reason} (tried {retries + 1} times)")


def _request_rest(url: str, part: Path, have: int, size: int, name: str, timeout: float, progress: bool) -> None:
    """One request for the bytes after the first `have`; appends them to `part`."""
    headers = {"User-Agent": "distillm-data-fetch"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # the range does not fit the file: start over
            part.unlink(missing_ok=True)
            raise _Retry(f"HTTP 416 for bytes={have}-") from e
        if e.code in RETRIED_HTTP_STATUSES:
            raise _Retry(f"HTTP {e.code} {e.reason}") from e
        raise InputError(name, None, f"cannot download {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Retry(str(getattr(e, "reason", e))) from e
    with response:
        if have and not (response.status == 206 and _range_start(response) == have):
            have = 0  # the server sent the whole file
        try:
            with (
                part.open("ab" if have else "wb") as out,
                tqdm(
                    total=size,
                    initial=have,
                    desc=name,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    disable=not progress,
                ) as bar,
            ):
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise _Retry(f"the connection broke: {e}") from e
    got = part.stat().st_size
    if got < size:
        raise _Retry(f"the connection closed after {got} of {size} bytes")


def _range_start(response: http.client.HTTPResponse) -> int | None:
    """The first byte of a 206 answer, from `Content-Range: bytes START-END/TOTAL`."""
    value = response.headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    start = spec.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None
