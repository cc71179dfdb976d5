"""Small persistent state next to a dataset: `sources.lock.json` (committable, enforced: the first verified
hash of every file the catalog has no hash for) and `.download-cache.json` (local stat cache, an optimisation),
plus the streaming file hash both rely on."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from .manifest import DownloadError

LOCK_NAME = "sources.lock.json"
CACHE_NAME = ".download-cache.json"
CHUNK = 1024 * 1024


def _atomic_write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _load_json(path: Path, what: str) -> dict:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DownloadError(f"{path}: unreadable {what} ({err}); fix or delete it") from None
    if not isinstance(data, dict):
        raise DownloadError(f"{path}: unreadable {what} (not a JSON object); fix or delete it")
    return data


class SourcesLock:
    """`sources.lock.json`: {path: {bytes, sha256, url}} of the first verified download of unhashed files."""

    def __init__(self, path: Path):
        self.path = path
        self.files: dict[str, dict] = _load_json(path, "lock manifest").get("files", {})
        self._mutex = threading.Lock()
        self._dirty = False

    def get(self, rel: str) -> dict | None:
        return self.files.get(rel)

    def record(self, rel: str, url: str | None, size: int, sha: str) -> None:
        with self._mutex:
            if rel not in self.files:
                self.files[rel] = {"bytes": size, "sha256": sha, "url": url}
                self._dirty = True

    def save(self) -> None:
        with self._mutex:
            if self._dirty:
                _atomic_write_json(self.path, {"version": 1, "files": self.files})
                self._dirty = False


class HashCache:
    """path -> (size, mtime_ns, sha256): a file unchanged since it was verified is not hashed again."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list] = _load_json(path, "download cache")
        self._mutex = threading.Lock()
        self._dirty = False

    def sha(self, rel: str, path: Path, force: bool = False) -> tuple[int, str]:
        st = path.stat()
        cached = self.entries.get(rel)
        if not force and cached and cached[:2] == [st.st_size, st.st_mtime_ns]:
            return st.st_size, cached[2]
        sha = hash_file(path)
        self.put(rel, path, sha)
        return st.st_size, sha

    def put(self, rel: str, path: Path, sha: str) -> None:
        st = path.stat()
        with self._mutex:
            self.entries[rel] = [st.st_size, st.st_mtime_ns, sha]
            self._dirty = True

    def save(self) -> None:
        with self._mutex:
            if self._dirty:
                _atomic_write_json(self.path, self.entries)
                self._dirty = False


def hash_file(path: Path, limit: int | None = None):
    """sha256 of a file (or of its first `limit` bytes, returned as the live hasher to continue)."""
    hasher = hashlib.sha256()
    left = limit
    with path.open("rb") as fh:
        while left is None or left > 0:
            chunk = fh.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            hasher.update(chunk)
            if left is not None:
                left -= len(chunk)
    return hasher if limit is not None else hasher.hexdigest()
