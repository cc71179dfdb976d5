"""HTTP fetch of one file: `Range` resume into `<dest>.part`, retries with backoff, sha256 computed while
streaming, error classification, and which hosts answered (a host that never connects is not tried again)."""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .lock import CHUNK, hash_file

if TYPE_CHECKING:
    from .context import DownloadRun, DownloadTask

log = logging.getLogger(__name__)

USER_AGENT = "llava-uhd-mlops/0.1 (dataset download; python-urllib)"
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ECONNREFUSED}
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class SourceError(Exception):
    def __init__(self, kind: str, message: str):  # kind: missing | unreachable
        self.kind = kind
        super().__init__(message)


class _Incomplete(Exception):
    """The connection ended before Content-Length bytes arrived (retryable; the .part keeps them)."""


class HostTracker:
    """Which hosts answered; a host that failed at the connection level stops being tried this run."""

    def __init__(self):
        self.reached: set[str] = set()
        self.down: dict[str, str] = {}
        self._mutex = threading.Lock()

    def mark_reached(self, host: str) -> None:
        with self._mutex:
            self.reached.add(host)

    def mark_down(self, host: str, why: str) -> None:
        with self._mutex:
            if host not in self.reached:
                self.down.setdefault(host, why)

    def check(self, host: str) -> None:
        why = self.down.get(host)
        if why is not None:
            raise SourceError("unreachable", f"{host} unreachable earlier in this run ({why})")


def fetch_resuming(run: DownloadRun, task: DownloadTask, part: Path) -> tuple[int, str, int]:
    """Download `task.url` into `part`, resuming; return (size, sha256, bytes received this call)."""
    host = urlsplit(task.url).netloc
    received = 0
    for attempt in range(run.retries + 1):
        run.hosts.check(host)
        try:
            size, sha, got = _attempt(run, task, part, host)
            return size, sha, received + got
        except SourceError:
            raise
        except Exception as err:  # classified below; unknown kinds are re-raised as fatal
            kind, why, delay = _classify(err)
            received += getattr(err, "received", 0)
            if kind == "fatal":
                raise
            if kind == "permanent":
                raise SourceError("missing", f"{why} ({task.url})") from None
            if attempt == run.retries:
                if kind == "unreachable":
                    run.hosts.mark_down(host, why)
                    raise SourceError("unreachable", f"{host}: {why} ({task.url})") from None
                raise SourceError("missing", f"gave up after {attempt + 1} attempts: {why} ({task.url})") from None
            wait_s = max(delay, min(run.backoff_s * 2**attempt, run.max_backoff_s))
            log.info("%s: %s; retry %d/%d in %.1f s", task.url, why, attempt + 1, run.retries, wait_s)
            if run.stop.wait(wait_s):
                raise KeyboardInterrupt("download stopped") from None
    raise AssertionError("not reached: the last attempt returns or raises")


def _attempt(run: DownloadRun, task: DownloadTask, part: Path, host: str) -> tuple[int, str, int]:
    offset = part.stat().st_size if part.exists() else 0
    if task.size is not None and offset > task.size:
        offset = _truncate(part)
    if task.size is not None and offset == task.size and offset > 0:  # finished earlier, not yet verified
        return offset, hash_file(part), 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = run.opener.open(urllib.request.Request(task.url, headers=headers), timeout=run.timeout_s)
    except urllib.error.HTTPError as err:
        run.hosts.mark_reached(host)
        if err.code == 416 and offset:
            return _after_416(err, part, offset)
        raise
    with resp:
        run.hosts.mark_reached(host)
        offset = _agree_on_offset(run, resp, part, offset)
        _reject_html(resp, task)
        length = _int_header(resp, "Content-Length")
        if length is not None:
            run.progress.expect(length)
        return _stream(run, resp, part, offset, length)


def _stream(run: DownloadRun, resp, part: Path, offset: int, length: int | None) -> tuple[int, str, int]:
    hasher = hash_file(part, limit=offset) if offset else hashlib.sha256()
    received = 0
    with part.open("ab" if offset else "wb") as fh:
        while chunk := resp.read(CHUNK):
            if run.stop.is_set():
                raise KeyboardInterrupt("download stopped")
            fh.write(chunk)
            hasher.update(chunk)
            received += len(chunk)
            run.progress.add(len(chunk))
    # http.client returns b"" (no exception) when the peer closes early: compare with Content-Length.
    if length is not None and received < length:
        run.progress.expect(received - length)  # the bar's total forgets the bytes that never came
        err = _Incomplete(f"connection closed after {offset + received} of {offset + length} bytes")
        err.received = received
        raise err
    return offset + received, hasher.hexdigest(), received


def _agree_on_offset(run: DownloadRun, resp, part: Path, offset: int) -> int:
    """206 at our offset: append. 200 (Range ignored): restart from zero. 206 elsewhere: retry from zero."""
    if resp.status == 206:
        start = _content_range_start(resp.headers.get("Content-Range", ""))
        if start == offset:
            return offset
        _truncate(part)
        raise _Incomplete(f"server sent a range starting at {start}, not at {offset}; restarting")
    if offset:
        log.info("%s ignored the Range request (HTTP %s): restarting from byte 0", resp.url, resp.status)
        _truncate(part)
    return 0


def _after_416(err: urllib.error.HTTPError, part: Path, offset: int) -> tuple[int, str, int]:
    """416 for `bytes=N-`: if the server's size is N the .part is complete, otherwise start over."""
    total = (err.headers.get("Content-Range") or "").rpartition("/")[2]
    if total.isdigit() and int(total) == offset:
        return offset, hash_file(part), 0
    _truncate(part)
    raise _Incomplete(f"range not satisfiable (server size {total or '?'}, have {offset}); restarting")


def _reject_html(resp, task: DownloadTask) -> None:
    if resp.headers.get_content_type() == "text/html" and not task.path.endswith((".html", ".htm")):
        raise SourceError("missing", f"the server sent an HTML page instead of the file (login, consent or quota "
                                      f"page?) ({task.url})")


def _classify(err: BaseException) -> tuple[str, str, float]:
    """(fatal | permanent | transient | unreachable, message, minimum delay before the next attempt)."""
    if isinstance(err, urllib.error.HTTPError):
        retry_after = _int_header(err, "Retry-After") or 0
        if err.code in (408, 425, 429) or err.code >= 500:
            return "transient", f"HTTP {err.code} {err.reason}", min(retry_after, 300)
        return "permanent", f"HTTP {err.code} {err.reason}", 0
    if isinstance(err, urllib.error.URLError):
        reason = err.reason
        if isinstance(reason, socket.gaierror):
            return "unreachable", f"DNS lookup failed ({reason})", 0
        if isinstance(reason, TimeoutError):
            return "unreachable", "connection timed out", 0
        if isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS:
            return "unreachable", os.strerror(reason.errno).lower(), 0
        return "transient", f"{reason}", 0
    if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
        return "fatal", str(err), 0
    if isinstance(err, _Incomplete | http.client.HTTPException | OSError):
        return "transient", f"{type(err).__name__}: {err}", 0
    if isinstance(err, ValueError):  # malformed URL
        return "permanent", str(err), 0
    return "fatal", repr(err), 0


def _int_header(resp, name: str) -> int | None:
    value = (resp.headers.get(name) or "").strip()
    return int(value) if value.isdigit() else None


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _truncate(part: Path) -> int:
    with part.open("wb"):
        pass
    return 0
