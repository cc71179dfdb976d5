"""A real HTTP server on 127.0.0.1 (port 0) that serves fixture files and misbehaves on request.

Used by the download tests and by benchmarks/download_throughput.py: it speaks real HTTP through the
real socket stack (urllib sees what it would see from a CDN), supports `Range: bytes=N-` (206 with
Content-Range, 416 past the end), and logs every request so tests can assert what was asked.

Misbehaviours, switchable per path:
  drop_once / drop_always        send the headers and half the body, then close the connection
  corrupt_once / corrupt_always  flip one byte in the middle of the file
  not_found                      404
  ignore_range                   answer 200 with the whole file even when a Range is asked
  html                           serve the body as text/html (a login or consent page look-alike)
  error_500_once                 a 500 on the first request
`add_redirect(path, target)` answers 302 to another route (as the Hugging Face hub does to its CDN).
`stream_bytes_per_s` caps every connection's rate (a WAN-like per-stream limit for the benchmark).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BEHAVIOURS = {"drop_once", "drop_always", "corrupt_once", "corrupt_always", "not_found", "ignore_range", "html",
              "error_500_once"}
SEND_CHUNK = 256 * 1024


@dataclass
class Route:
    data: bytes | Path
    behaviours: set[str] = field(default_factory=set)
    hits: int = 0

    def size(self) -> int:
        return self.data.stat().st_size if isinstance(self.data, Path) else len(self.data)

    def read(self, start: int, corrupt: bool) -> bytes | Path:
        if isinstance(self.data, Path) and not corrupt:
            return self.data
        body = self.data.read_bytes() if isinstance(self.data, Path) else self.data
        if corrupt:
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1:]
        return body


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    status: int


class FixtureServer:
    """`with FixtureServer() as srv: url = srv.add("a.bin", data, "drop_once")`."""

    def __init__(self, stream_bytes_per_s: float | None = None):
        self.stream_bytes_per_s = stream_bytes_per_s
        self.routes: dict[str, Route] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[Request] = []
        self._mutex = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fixture = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fixture-http", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def add(self, path: str, data: bytes | Path, *behaviours: str) -> str:
        unknown = set(behaviours) - BEHAVIOURS
        if unknown:
            raise ValueError(f"unknown behaviours {unknown}")
        self.routes[path] = Route(data, set(behaviours))
        return self.url(path)

    def add_redirect(self, path: str, target: str) -> str:
        self.redirects[path] = target
        return self.url(path)

    def set(self, path: str, *behaviours: str) -> None:
        self.routes[path].behaviours = set(behaviours)
        self.routes[path].hits = 0

    def gets(self, path: str | None = None) -> list[Request]:
        with self._mutex:
            return [r for r in self.requests if path is None or r.path == path]

    def log(self, request: Request) -> None:
        with self._mutex:
            self.requests.append(request)

    def __enter__(self) -> FixtureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a dropped body is a closed socket

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        fixture: FixtureServer = self.server.fixture
        path = self.path.lstrip("/")
        range_header = self.headers.get("Range")
        if path in fixture.redirects:
            fixture.log(Request(path, range_header, 302))
            self.send_response(302)
            self.send_header("Location", fixture.url(fixture.redirects[path]))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        route = fixture.routes.get(path)
        if route is None or "not_found" in route.behaviours:
            fixture.log(Request(path, range_header, 404))
            self.send_error(404)
            return
        first = route.hits == 0
        route.hits += 1
        b = route.behaviours
        if "error_500_once" in b and first:
            fixture.log(Request(path, range_header, 500))
            self.send_error(500)
            return
        size = route.size()
        start = 0
        if range_header and "ignore_range" not in b:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= size:
                fixture.log(Request(path, range_header, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        status = 206 if start or (range_header and "ignore_range" not in b) else 200
        fixture.log(Request(path, range_header, status))
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if "html" in b else "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        corrupt = "corrupt_always" in b or ("corrupt_once" in b and first)
        drop = "drop_always" in b or ("drop_once" in b and first)
        self._send(route.read(start, corrupt), start, size, stop=start + (size - start) // 2 if drop else size)

    def _send(self, body: bytes | Path, start: int, size: int, stop: int) -> None:
        rate = self.server.fixture.stream_bytes_per_s
        t0, sent = time.monotonic(), 0
        try:
            for chunk in _chunks(body, start, stop):
                self.wfile.write(chunk)
                sent += len(chunk)
                if rate:  # pace to the per-connection cap
                    time.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        except (BrokenPipeError, ConnectionResetError):  # the client gave up; nothing to do
            pass


def _chunks(body: bytes | Path, start: int, stop: int):
    if isinstance(body, bytes):
        for i in range(start, stop, SEND_CHUNK):
            yield body[i:min(i + SEND_CHUNK, stop)]
        return
    with body.open("rb") as fh:
        fh.seek(start)
        left = stop - start
        while left > 0 and (chunk := fh.read(min(SEND_CHUNK, left))):
            yield chunk
            left -= len(chunk)


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
