"""A local HTTP server standing in for raw.githubusercontent.com: it serves the files of a data
root under the URL paths that `pipeline/data_sources.toml` names (real HTTP/1.1 with `Range`).

The tests of `distillm data fetch` start it in a thread. Run as a module, it serves a whole
data root, so that a clone with no `../shared` beside it can run the two commands end to end
with nothing else reachable:

    python -m tests.data_mirror ../shared --port 8765 &
    DISTILLM_DATA_MIRROR=http://127.0.0.1:8765 bash .ci/run   # in the clone
"""

from __future__ import annotations

import argparse
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.shared_data import DataFile, load_manifest


def url_path(f: DataFile) -> str:
    assert f.url is not None
    return urlsplit(f.url).path


class Mirror(ThreadingHTTPServer):
    """Serves `files` (URL path -> bytes, or a Path read per request) on 127.0.0.1."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes | Path], port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.files = files
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.drop_after: dict[str, int] = {}  # path -> the byte after which the next answer stops
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Mirror

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv, ask = self.server, self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, ask))
            drop = srv.drop_after.pop(self.path, None)
        source = srv.files.get(self.path)
        if source is None:
            self.send_error(404)
            return
        body = source.read_bytes() if isinstance(source, Path) else source
        start = int(re.fullmatch(r"bytes=(\d+)-", ask).group(1)) if ask else 0
        if start >= len(body):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if ask else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Accept-Ranges", "bytes")
        if ask:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if drop is not None:  # a connection that breaks after `drop` bytes of the file
            self.wfile.write(body[start:drop])
            self.close_connection = True
            return
        self.wfile.write(body[start:])


def serve(files: dict[str, bytes | Path]):
    server = Mirror(files)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


def manifest_files(root: Path) -> dict[str, bytes | Path]:
    """URL path -> file under `root`, for every manifest entry with a URL; all must be there."""
    files = [f for f in load_manifest() if f.url]
    missing = [f.path for f in files if not (root / f.path).is_file()]
    if missing:
        raise SystemExit(f"{root}: {len(missing)} manifest file(s) missing, e.g. {missing[0]}")
    return {url_path(f): root / f.path for f in files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a data root with the layout of ../shared (data/, reference/)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    files = manifest_files(args.root)
    server = Mirror(files, args.port)
    print(f"serving {len(files)} files of {args.root} at {server.url}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
