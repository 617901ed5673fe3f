"""A stand-in for Zenodo's REST deposit API on 127.0.0.1, speaking its documented shapes.

Shapes follow developers.zenodo.org (source: github.com/zenodo/developers.zenodo.org,
source/includes/resources/...): POST /api/deposit/depositions -> 201 deposition with
links {bucket, files, html, latest_draft, publish, self, ...}; PUT {bucket}/{key} -> 201
file {key, size, checksum "md5:...", links}; GET .../{id}/files -> 200 list of
{id, filename, filesize, checksum (hex)}; DELETE .../{id}/files/{file_id} -> 204 (403 once
published); PUT .../{id} {"metadata"} -> 200; POST .../actions/publish -> 202 deposition
with doi, record_id; POST .../actions/newversion -> 201 with the *original* deposition,
the new draft under links.latest_draft; GET /api/records/{id} -> 200 record whose files
have key, size, checksum "md5:..." and links.self ending in /content. Errors are
{"message", "status"}.

It checks `Authorization: Bearer TOKEN` on every deposit and bucket call, records every
request, and injects failures (`fail(...)`): a status on the Nth matching request, with
headers such as Retry-After.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Failure:
    method: str
    path: str  # regex matched against the request path
    nth: int  # 1-based: fail the nth matching request ...
    status: int
    times: int = 1  # ... and the next times-1 ones
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "injected failure"
    seen: int = 0


class FakeZenodo:
    def __init__(self, token: str):
        self.token = token
        self.requests: list[Recorded] = []
        self.depositions: dict[int, dict[str, Any]] = {}
        self.buckets: dict[str, dict[str, dict[str, Any]]] = {}  # bucket -> key -> {id, data}
        self.records: dict[int, dict[str, Any]] = {}
        self.failures: list[Failure] = []
        self.corrupt_upload_checksum = False
        self._next_id = 1000
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakeZenodo:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def fail(self, method: str, path: str, nth: int, status: int, **kwargs) -> None:
        self.failures.append(Failure(method, path, nth, status, **kwargs))

    def calls(self, method: str, pattern: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def add_record(self, files: dict[str, bytes], metadata: dict[str, Any] | None = None) -> int:
        """A record published by someone else (e.g. the Rank-DistiLLM runs): its files as given."""
        deposition = self._new_deposition({"title": "a published record", **(metadata or {})})
        for key, data in files.items():
            self.buckets[deposition["_bucket"]][key] = {"id": str(uuid.uuid4()), "data": data}
        self._publish(deposition)
        return deposition["id"]

    # --- the API ---------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict]:
        for failure in self.failures:
            if failure.method == method and re.search(failure.path, path):
                failure.seen += 1
                if failure.nth <= failure.seen < failure.nth + failure.times:
                    return failure.status, {"message": failure.message, "status": failure.status}, failure.headers
        if m := re.fullmatch(r"/api/records/(\d+)", path):
            record = self.records.get(int(m[1]))
            return (200, record, {}) if record else _error(404, "PID does not exist.")
        if m := re.fullmatch(r"/api/records/(\d+)/files/(.+)/content", path):
            record = self.records.get(int(m[1]))
            stored = record and self.buckets[record["_bucket"]].get(m[2])
            return (200, stored["data"], {}) if stored else _error(404, "File not found.")
        if headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "The server could not verify that you are authorized to access the URL requested.")
        if path == "/api/deposit/depositions" and method == "POST":
            return 201, self._view(self._new_deposition(_json(body).get("metadata", {}))), {}
        if m := re.fullmatch(r"/api/files/([\w-]+)/(.+)", path):
            return self._upload(m[1], m[2], method, body)
        m = re.fullmatch(r"/api/deposit/depositions/(\d+)(/.*)?", path)
        deposition = m and self.depositions.get(int(m[1]))
        if not deposition:
            return _error(404, "Deposition not found")
        rest = m[2] or ""
        if rest == "" and method == "GET":
            return 200, self._view(deposition), {}
        if rest == "" and method == "PUT":
            if headers.get("content-type") != "application/json":
                return _error(415, "Unsupported media type")
            metadata = _json(body).get("metadata", {})
            missing = [k for k in ("upload_type", "title", "creators", "description") if not metadata.get(k)]
            if missing:
                return (
                    400,
                    {"message": "Validation error", "status": 400, "errors": [{"field": k} for k in missing]},
                    {},
                )
            deposition["metadata"].update(metadata)
            deposition["title"] = metadata["title"]
            return 200, self._view(deposition), {}
        if rest == "/files" and method == "GET":
            return 200, self._files(deposition), {}
        if (f := re.fullmatch(r"/files/([\w-]+)", rest)) and method == "DELETE":
            if deposition["submitted"]:
                return _error(403, "Deleting a file of a published deposition is not allowed")
            bucket = self.buckets[deposition["_bucket"]]
            key = next((k for k, v in bucket.items() if v["id"] == f[1]), None)
            if key is None:
                return _error(404, "Deposition file does not exist")
            del bucket[key]
            return 204, None, {}
        if rest == "/actions/publish" and method == "POST":
            return self._publish(deposition)
        if rest == "/actions/newversion" and method == "POST":
            if not deposition["submitted"]:
                return _error(400, "Cannot create a new version of an unpublished deposition")
            draft = next((d for d in self.depositions.values() if d.get("_parent") == deposition["id"]), None)
            if draft is None or draft["submitted"]:
                draft = self._new_deposition(dict(deposition["metadata"]))
                draft["_parent"] = deposition["id"]
                for key, stored in self.buckets[deposition["_bucket"]].items():  # a snapshot of the files
                    self.buckets[draft["_bucket"]][key] = {"id": str(uuid.uuid4()), "data": stored["data"]}
            view = self._view(deposition)
            view["links"]["latest_draft"] = self._view(draft)["links"]["self"]
            return 201, view, {}
        return _error(405, "Method not allowed")

    def _new_deposition(self, metadata: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        bucket = str(uuid.uuid4())
        self.buckets[bucket] = {}
        deposition = {
            "id": self._next_id,
            "conceptrecid": str(self._next_id - 1),
            "created": "2025-01-01T00:00:00+00:00",
            "modified": "2025-01-01T00:00:00+00:00",
            "owner": 1,
            "record_id": self._next_id,
            "state": "unsubmitted",
            "submitted": False,
            "title": metadata.get("title", ""),
            "metadata": {"prereserve_doi": {"doi": f"10.5072/zenodo.{self._next_id}", "recid": self._next_id}},
            "_bucket": bucket,
        }
        deposition["metadata"].update(metadata)
        self.depositions[deposition["id"]] = deposition
        return deposition

    def _view(self, deposition: dict[str, Any]) -> dict[str, Any]:
        base, i = f"{self.url}/api/deposit/depositions/{deposition['id']}", deposition["id"]
        view = {k: v for k, v in deposition.items() if not k.startswith("_")}
        view["files"] = self._files(deposition)
        view["links"] = {
            "bucket": f"{self.url}/api/files/{deposition['_bucket']}",
            "discard": f"{base}/actions/discard",
            "edit": f"{base}/actions/edit",
            "files": f"{base}/files",
            "html": f"{self.url}/deposit/{i}",
            "latest_draft": base,
            "latest_draft_html": f"{self.url}/deposit/{i}",
            "newversion": f"{base}/actions/newversion",
            "publish": f"{base}/actions/publish",
            "self": base,
        }
        if deposition["submitted"]:
            view["links"]["record"] = f"{self.url}/api/records/{i}"
        return view

    def _files(self, deposition: dict[str, Any]) -> list[dict[str, Any]]:
        base = f"{self.url}/api/deposit/depositions/{deposition['id']}/files"
        return [
            {
                "id": stored["id"],
                "filename": key,
                "filesize": len(stored["data"]),
                "checksum": hashlib.md5(stored["data"]).hexdigest(),  # the deposit API gives plain hex
                "links": {"self": f"{base}/{stored['id']}", "download": f"{self.url}/api/files/x/{key}"},
            }
            for key, stored in self.buckets[deposition["_bucket"]].items()
        ]

    def _upload(self, bucket_id: str, key: str, method: str, body: bytes) -> tuple[int, Any, dict]:
        if method != "PUT" or bucket_id not in self.buckets:
            return _error(404, "Bucket not found")
        owner = next(d for d in self.depositions.values() if d["_bucket"] == bucket_id)
        if owner["submitted"]:
            return _error(403, "Bucket is locked: the deposition is published")
        self.buckets[bucket_id][key] = {"id": str(uuid.uuid4()), "data": body}
        md5 = hashlib.md5(body + b"x" if self.corrupt_upload_checksum else body).hexdigest()
        link = f"{self.url}/api/files/{bucket_id}/{key}"
        answer = {
            "key": key,
            "mimetype": "application/octet-stream",
            "checksum": f"md5:{md5}",
            "size": len(body),
            "version_id": str(uuid.uuid4()),
            "is_head": True,
            "delete_marker": False,
            "created": "2025-01-01T00:00:00+00:00",
            "updated": "2025-01-01T00:00:00+00:00",
            "links": {"self": link, "version": f"{link}?versionId=1", "uploads": f"{link}?uploads"},
        }
        return 201, answer, {}

    def _publish(self, deposition: dict[str, Any]) -> tuple[int, Any, dict]:
        if not self.buckets[deposition["_bucket"]]:
            return _error(400, "Validation error: missing files")
        if not deposition["metadata"].get("title"):
            return _error(400, "Validation error: missing metadata")
        i = deposition["id"]
        deposition.update(
            state="done", submitted=True, doi=f"10.5072/zenodo.{i}", doi_url=f"https://doi.org/10.5072/zenodo.{i}"
        )
        deposition["record_url"] = f"{self.url}/record/{i}"
        files = [
            {
                "id": stored["id"],
                "key": key,
                "size": len(stored["data"]),
                "checksum": f"md5:{hashlib.md5(stored['data']).hexdigest()}",
                "links": {"self": f"{self.url}/api/records/{i}/files/{key}/content"},
            }
            for key, stored in self.buckets[deposition["_bucket"]].items()
        ]
        self.records[i] = {
            "id": i,
            "recid": str(i),
            "doi": deposition["doi"],
            "metadata": {k: v for k, v in deposition["metadata"].items() if k != "prereserve_doi"},
            "files": files,
            "links": {"self": f"{self.url}/api/records/{i}", "html": f"{self.url}/records/{i}"},
            "state": "done",
            "submitted": True,
            "_bucket": deposition["_bucket"],
        }
        return 202, self._view(deposition), {}


def _error(status: int, message: str) -> tuple[int, Any, dict]:
    return status, {"message": message, "status": status}, {}


def _json(body: bytes) -> dict[str, Any]:
    return json.loads(body) if body else {}


def _handler(app: FakeZenodo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            url = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            with app._lock:
                app.requests.append(Recorded(self.command, url.path, parse_qs(url.query), headers, body))
                status, payload, extra = app.handle(self.command, url.path, headers, body)
            if isinstance(payload, dict) and "_bucket" in payload:
                payload = {k: v for k, v in payload.items() if not k.startswith("_")}
            data = b"" if payload is None else payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            ctype = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    return Handler
