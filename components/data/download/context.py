"""The state one `download_dataset` call threads through its workers: tasks, outcomes, the progress bar."""

from __future__ import annotations

import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..archives import ArchiveLimits
from ..catalog import Dataset, SourceFile
from .http import HostTracker
from .lock import HashCache, SourcesLock
from .manifest import FileRecord


@dataclass(frozen=True)
class DownloadTask:
    path: str  # relative to the dataset folder
    url: str | None
    size: int | None  # expected exact size (catalog, else lock)
    sha256: str | None  # expected hash (catalog, else lock)
    pinned_by: str  # "catalog" | "lock" | "" (nothing to compare against yet)
    source: SourceFile | None  # None for url_list items
    note: str = ""


@dataclass
class TaskOutcome:
    record: FileRecord
    network: str = "none"  # none (no request needed) | reached | unreachable
    fetched: bool = False  # a download completed in this run
    fetched_bytes: int = 0
    extracted: int = 0
    items: list[DownloadTask] = field(default_factory=list)  # url_list: the per-item tasks it names


class ByteProgress:
    def __init__(self, enabled: bool, desc: str):
        self._bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled)
        self._mutex = threading.Lock()

    def expect(self, nbytes: int) -> None:
        with self._mutex:
            self._bar.total = (self._bar.total or 0) + nbytes
            self._bar.refresh()

    def add(self, nbytes: int) -> None:
        with self._mutex:
            self._bar.update(nbytes)

    def close(self) -> None:
        self._bar.close()


@dataclass
class DownloadRun:
    dataset: Dataset
    root: Path
    workers: int
    retries: int
    backoff_s: float
    max_backoff_s: float
    timeout_s: float
    verify_existing: bool
    extract: bool
    archive_limits: ArchiveLimits
    limit: int | None
    lock: SourcesLock
    cache: HashCache
    progress: ByteProgress
    hosts: HostTracker = field(default_factory=HostTracker)
    stop: threading.Event = field(default_factory=threading.Event)
    opener: urllib.request.OpenerDirector = field(default_factory=urllib.request.build_opener)


def task_for(run: DownloadRun, rel: str, url, size, sha, source, note="") -> DownloadTask:
    if sha is not None:
        return DownloadTask(rel, url, size, sha, "catalog", source, note)
    locked = run.lock.get(rel)
    if locked:
        size = size if size is not None else locked["bytes"]
        return DownloadTask(rel, url, size, locked["sha256"], "lock", source, note)
    return DownloadTask(rel, url, size, None, "", source, note)
