"""Download the catalog's datasets: resumable, verified, parallel, and honest about what is missing.

Why each piece is here (the LLaVA data story is one of silent gaps: dead URLs, half-written zips,
image counts that do not add up):
- Resume: bytes go to `<dest>.part`; a retry or a later run asks for `Range: bytes=N-` and appends.
  A server that answers 200 instead of 206 is detected and the file restarts from zero.
- Verify: sha256 is computed while streaming (plus the resumed prefix, read back once) and checked
  against the catalog, or against `sources.lock.json`, which records the first verified download of
  every file the catalog has no hash for. A mismatch deletes the file and downloads it once more;
  a second mismatch is reported as `corrupt`, never used.
- Atomic: the `.part` file is renamed to its final name only after verification.
- Parallel: files (and OCR-VQA's per-image URLs) are fetched by a thread pool; one tqdm bar counts bytes.
- Honest: every catalog entry gets a row in `<raw_root>/<dataset>/manifest.parquet` with status
  present / missing / corrupt and the error; counts reconcile (expected = present + missing + corrupt).
  When no host answers at all, one `NetworkUnreachableError` names them and points to the offline
  `data.source: synthetic`.
- Cheap re-runs: a local stat cache (`.download-cache.json`: size, mtime, sha256) means files already
  verified are not hashed again, so a second run makes no request and reads no file ("up to date").
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .archives import DEFAULT_LIMITS, ArchiveError, ArchiveLimits, InsufficientDiskSpaceError, extract_archive
from .catalog import CATALOG, Dataset, SourceFile, check_relative, get_dataset, with_dependencies

__all__ = [
    "DownloadError", "NetworkUnreachableError", "InsufficientDiskSpaceError", "FileRecord", "DownloadReport",
    "MANIFEST_SCHEMA", "download_dataset", "download_datasets", "download_all", "combined_manifest", "read_manifest",
    "write_manifest",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.parquet"
LOCK_NAME = "sources.lock.json"
CACHE_NAME = ".download-cache.json"
USER_AGENT = "llava-uhd-mlops/0.1 (dataset download; python-urllib)"
CHUNK = 1024 * 1024
MANIFEST_SCHEMA = pa.schema([
    ("path", pa.string()),  # relative to <raw_root>/<dataset>/
    ("bytes", pa.int64()),
    ("sha256", pa.string()),
    ("source", pa.string()),  # the URL (null for sources without one)
    ("status", pa.string()),  # present | missing | corrupt
    ("error", pa.string()),  # why it is not present ("" when present)
])
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ECONNREFUSED}
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class DownloadError(RuntimeError):
    pass


class NetworkUnreachableError(DownloadError):
    """No download host could be reached at all (offline machine, DNS or proxy problem)."""

    def __init__(self, dataset: str, hosts: dict[str, str]):
        self.hosts = hosts
        listed = "; ".join(f"{h}: {why}" for h, why in sorted(hosts.items()))
        super().__init__(
            f"{dataset}: could not reach any download host ({listed}). Check the network and proxy settings "
            "(http_proxy / https_proxy), or set `data.source: synthetic` in params.yaml to use the embedded "
            "offline dataset.")


@dataclass(frozen=True)
class FileRecord:
    """One manifest row."""

    path: str
    bytes: int | None
    sha256: str | None
    source: str | None
    status: str  # present | missing | corrupt
    error: str = ""


@dataclass
class DownloadReport:
    dataset: str
    root: Path
    records: list[FileRecord]
    fetched_files: int = 0
    fetched_bytes: int = 0
    extracted_members: int = 0
    elapsed_s: float = 0.0

    def _count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def expected(self) -> int:
        return len(self.records)

    @property
    def present(self) -> int:
        return self._count("present")

    @property
    def missing(self) -> int:
        return self._count("missing")

    @property
    def corrupt(self) -> int:
        return self._count("corrupt")

    @property
    def ok(self) -> bool:
        return self.present == self.expected

    @property
    def up_to_date(self) -> bool:
        """Nothing was fetched or extracted: the run was a no-op."""
        return self.fetched_files == 0 and self.extracted_members == 0

    @property
    def counts(self) -> dict[str, int]:
        return {"expected": self.expected, "present": self.present, "missing": self.missing,
                "corrupt": self.corrupt}

    def summary(self) -> str:
        head = (f"{self.dataset}: {self.expected} expected, {self.present} present, {self.missing} missing, "
                f"{self.corrupt} corrupt")
        if self.up_to_date:
            return head + (" (up to date)" if self.ok else " (nothing new fetched; see the manifest's error column)")
        return (head + f"; fetched {self.fetched_files} file(s), {self.fetched_bytes / 1e6:.1f} MB, extracted "
                f"{self.extracted_members} member(s) in {self.elapsed_s:.1f} s")


# --------------------------------------------------------------------------------------------------
# Small persistent state: the lock (committable, enforced) and the stat cache (local, an optimisation).


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


class _Lock:
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


class _HashCache:
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
        sha = _hash_file(path)
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


def _hash_file(path: Path, limit: int | None = None):
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


# --------------------------------------------------------------------------------------------------
# Run context


@dataclass(frozen=True)
class _Task:
    path: str  # relative to the dataset folder
    url: str | None
    size: int | None  # expected exact size (catalog, else lock)
    sha256: str | None  # expected hash (catalog, else lock)
    pinned_by: str  # "catalog" | "lock" | "" (nothing to compare against yet)
    source: SourceFile | None  # None for url_list items
    note: str = ""


@dataclass
class _Outcome:
    record: FileRecord
    network: str = "none"  # none (no request needed) | reached | unreachable
    fetched: bool = False  # a download completed in this run
    fetched_bytes: int = 0
    extracted: int = 0
    items: list[_Task] = field(default_factory=list)  # url_list: the per-item tasks it names


class _SourceError(Exception):
    def __init__(self, kind: str, message: str):  # kind: missing | unreachable
        self.kind = kind
        super().__init__(message)


class _Incomplete(Exception):
    """The connection ended before Content-Length bytes arrived (retryable; the .part keeps them)."""


class _Hosts:
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
            raise _SourceError("unreachable", f"{host} unreachable earlier in this run ({why})")


class _Progress:
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
class _Run:
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
    lock: _Lock
    cache: _HashCache
    progress: _Progress
    hosts: _Hosts = field(default_factory=_Hosts)
    stop: threading.Event = field(default_factory=threading.Event)
    opener: urllib.request.OpenerDirector = field(default_factory=urllib.request.build_opener)


# --------------------------------------------------------------------------------------------------
# Public API


def download_dataset(
    dataset: str | Dataset,
    raw_root: str | Path,
    workers: int = 4,
    retries: int = 4,
    limit: int | None = None,
    progress: bool = True,
    *,
    backoff_s: float = 1.0,
    max_backoff_s: float = 60.0,
    timeout_s: float = 60.0,
    verify_existing: bool = False,
    extract: bool = True,
    archive_limits: ArchiveLimits = DEFAULT_LIMITS,
) -> DownloadReport:
    """Fetch, verify and extract one dataset into `<raw_root>/<name>/`; write its manifest; return the report.

    `limit=N` takes the first N catalog files and the first N entries of each url_list (smoke runs).
    `retries` transient failures per file are retried with exponential backoff from `backoff_s`.
    `verify_existing` re-hashes files already present instead of trusting the stat cache.
    Raises `NetworkUnreachableError` when every file needing the network failed to connect, and
    `InsufficientDiskSpaceError` before downloading when the known sizes do not fit.
    """
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None or >= 1, got {limit}")
    started = time.monotonic()
    root = Path(raw_root) / ds.name
    root.mkdir(parents=True, exist_ok=True)
    run = _Run(ds, root, max(1, workers), max(0, retries), backoff_s, max_backoff_s, timeout_s, verify_existing,
               extract, archive_limits, limit, _Lock(root / LOCK_NAME), _HashCache(root / CACHE_NAME),
               _Progress(progress, f"download {ds.name}"))
    try:
        outcomes = _run_all(run)
    finally:
        run.progress.close()
        run.lock.save()
        run.cache.save()
    report = DownloadReport(
        ds.name, root, [o.record for o in outcomes],
        fetched_files=sum(o.fetched for o in outcomes),
        fetched_bytes=sum(o.fetched_bytes for o in outcomes),
        extracted_members=sum(o.extracted for o in outcomes),
        elapsed_s=time.monotonic() - started)
    write_manifest(report.records, root / MANIFEST_NAME)
    _raise_if_offline(run, outcomes)
    log.info(report.summary())
    return report


def download_datasets(
    names: Sequence[str],
    raw_root: str | Path,
    limit: int | None = None,
    workers: int = 4,
    **options,
) -> dict[str, DownloadReport]:
    """`download_dataset` for several catalog names (validated first), in order; the reports by name."""
    datasets = [get_dataset(n) for n in names]
    return {ds.name: download_dataset(ds, raw_root, workers=workers, limit=limit, **options) for ds in datasets}


def download_all(
    raw_root: str | Path,
    limit: int | None = None,
    workers: int = 4,
    names: Sequence[str] | None = None,
    **options,
) -> pa.Table:
    """Every catalog dataset (or `names` plus their dependencies): one combined manifest table.

    Paths are prefixed with the dataset folder (`mix665k/coco/train2017.zip`), relative to `raw_root`,
    and a `dataset` column is added. `limit=0` means no limit (the params.yaml convention).
    """
    chosen = with_dependencies(list(names) if names is not None else list(CATALOG))
    reports = download_datasets(chosen, raw_root, limit=limit or None, workers=workers, **options)
    return combined_manifest(reports.values())


def combined_manifest(reports: Iterable[DownloadReport]) -> pa.Table:
    rows = [{**dataclasses.asdict(r), "path": f"{rep.dataset}/{r.path}", "dataset": rep.dataset}
            for rep in reports for r in rep.records]
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA.append(pa.field("dataset", pa.string())))


def write_manifest(records: Iterable[FileRecord], path: str | Path) -> None:
    path = Path(path)
    rows = [dataclasses.asdict(r) for r in records]
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_manifest(path: str | Path) -> list[FileRecord]:
    return [FileRecord(**row) for row in pq.read_table(path, schema=MANIFEST_SCHEMA).to_pylist()]


# --------------------------------------------------------------------------------------------------
# Orchestration


def _run_all(run: _Run) -> list[_Outcome]:
    files = run.dataset.files[: run.limit] if run.limit else run.dataset.files
    tasks = [_task_for(run, f.dest, f.url, f.size, f.sha256, f, f.note) for f in files]
    _check_disk_space(run, tasks)
    outcomes = _parallel(run, _process_file, tasks)
    items = [item for o in outcomes for item in o.items]
    if items:
        outcomes += _parallel(run, _process_item, items)
    return outcomes


def _task_for(run: _Run, rel: str, url, size, sha, source, note="") -> _Task:
    if sha is not None:
        return _Task(rel, url, size, sha, "catalog", source, note)
    locked = run.lock.get(rel)
    if locked:
        return _Task(rel, url, size if size is not None else locked["bytes"], locked["sha256"], "lock", source, note)
    return _Task(rel, url, size, None, "", source, note)


def _parallel(run: _Run, fn: Callable[[_Run, _Task], _Outcome], tasks: list[_Task]) -> list[_Outcome]:
    """Results in task order; at most 4 x workers tasks queued, so 200K url_list items stay cheap."""
    results: list[_Outcome | None] = [None] * len(tasks)
    pending = iter(enumerate(tasks))
    with ThreadPoolExecutor(max_workers=run.workers, thread_name_prefix="download") as pool:
        running: dict = {}

        def fill():
            for i, task in pending:
                running[pool.submit(fn, run, task)] = i
                if len(running) >= 4 * run.workers:
                    return

        try:
            fill()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    results[running.pop(fut)] = fut.result()
                fill()
        except BaseException:
            run.stop.set()  # running downloads stop at their next chunk; their .part files stay for resume
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results  # type: ignore[return-value]


def _check_disk_space(run: _Run, tasks: list[_Task]) -> None:
    """Known (or approximate) sizes of what is still to fetch, plus archive extraction, vs free space."""
    need, unknown, count = 0, 0, 0
    for t in tasks:
        if t.url is None or (run.root / t.path).exists():
            continue
        size = t.size if t.size is not None else (t.source.approx_bytes if t.source else None)
        if size is None:
            unknown += 1
            continue
        part = run.root / (t.path + ".part")
        count += 1
        need += max(size - (part.stat().st_size if part.exists() else 0), 0)
        if run.extract and t.source is not None and t.source.is_archive:
            need += size  # the extracted copy: images do not compress, so about the archive's size
    free = shutil.disk_usage(run.root).free
    if need > free:
        raise InsufficientDiskSpaceError(
            f"{run.dataset.name}: {count} file(s) still to fetch need about {need / 1e9:.1f} GB (archives counted "
            f"twice, for extraction) but {run.root} has only {free / 1e9:.1f} GB free"
            + (f"; {unknown} more file(s) of unknown size are not counted" if unknown else "")
            + ". Free some space or point the raw data root at a larger disk.")


def _raise_if_offline(run: _Run, outcomes: list[_Outcome]) -> None:
    tried = [o for o in outcomes if o.network != "none"]
    if tried and all(o.network == "unreachable" for o in tried):
        raise NetworkUnreachableError(run.dataset.name, dict(run.hosts.down) or {"?": "unreachable"})


# --------------------------------------------------------------------------------------------------
# One catalog file / one url_list item


def _process_file(run: _Run, task: _Task) -> _Outcome:
    outcome = _ensure(run, task)
    src = task.source
    if outcome.record.status != "present" or src is None:
        return outcome
    if src.is_archive and run.extract:
        _extract(run, task, outcome)
    elif src.kind == "url_list":
        _expand_items(run, task, outcome)
    return outcome


def _process_item(run: _Run, task: _Task) -> _Outcome:
    if task.url is None:
        return _Outcome(FileRecord(task.path, None, None, None, "missing", task.note))
    return _ensure(run, task)


def _ensure(run: _Run, task: _Task) -> _Outcome:
    """Present and verified after this call, or a record saying why not."""
    dest = run.root / task.path
    if task.url is None:
        if dest.exists():  # placed by hand (browser-only or on-request sources)
            return _Outcome(_verify_existing(run, task, dest) or _corrupt_existing(task, dest))
        return _Outcome(FileRecord(task.path, None, None, None, "missing", f"no download URL: {task.note}"))
    tries = 2  # a verification failure earns exactly one fresh download
    if dest.exists():
        record = _verify_existing(run, task, dest)
        if record is not None:
            return _Outcome(record)
        log.warning("%s/%s: the file on disk does not match the %s; downloading it again",
                    run.dataset.name, task.path, "catalog" if task.pinned_by == "catalog" else LOCK_NAME)
        dest.unlink()
        tries = 1  # that was the first mismatch
    return _download(run, task, dest, tries)


def _mismatch(task: _Task, size: int, sha: str) -> str | None:
    if task.size is not None and size != task.size:
        return f"size {size} differs from the expected {task.size} ({task.pinned_by or 'catalog'})"
    if task.sha256 is not None and sha != task.sha256:
        where = "catalog" if task.pinned_by == "catalog" else LOCK_NAME
        return f"sha256 {sha[:12]}... differs from {task.sha256[:12]}... recorded in the {where}"
    return None


def _verify_existing(run: _Run, task: _Task, dest: Path) -> FileRecord | None:
    size, sha = run.cache.sha(task.path, dest, force=run.verify_existing)
    if _mismatch(task, size, sha) is not None:
        return None
    if task.sha256 is None:
        run.lock.record(task.path, task.url, size, sha)
    return FileRecord(task.path, size, sha, task.url, "present")


def _corrupt_existing(task: _Task, dest: Path) -> FileRecord:
    size = dest.stat().st_size
    sha = _hash_file(dest)
    return FileRecord(task.path, size, sha, None, "corrupt", _mismatch(task, size, sha) or "")


def _download(run: _Run, task: _Task, dest: Path, tries: int) -> _Outcome:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fetched, problem = 0, ""
    for attempt in range(tries):
        try:
            size, sha, received = _fetch(run, task, part)
        except _SourceError as err:
            return _Outcome(FileRecord(task.path, None, None, task.url, "missing", str(err)),
                            network="unreachable" if err.kind == "unreachable" else "reached",
                            fetched_bytes=fetched)
        fetched += received
        problem = _mismatch(task, size, sha)
        if problem is None:
            os.replace(part, dest)
            run.cache.put(task.path, dest, sha)
            if task.sha256 is None:
                run.lock.record(task.path, task.url, size, sha)
            return _Outcome(FileRecord(task.path, size, sha, task.url, "present"), "reached", True, fetched)
        part.unlink(missing_ok=True)
        again = "; downloading it again" if attempt + 1 < tries else ""
        log.warning("%s/%s: %s%s", run.dataset.name, task.path, problem, again)
    error = f"{problem} (also after a fresh download; the upstream file may have changed"
    error += f": delete its entry in {LOCK_NAME} to accept it)" if task.pinned_by == "lock" else ")"
    return _Outcome(FileRecord(task.path, None, None, task.url, "corrupt", error), "reached", False, fetched)


def _extract(run: _Run, task: _Task, outcome: _Outcome) -> None:
    archive = run.root / task.path
    dest = run.root / task.source.extract_to

    def keep_going(member: str, nbytes: int) -> None:
        if run.stop.is_set():  # another worker failed or Ctrl-C: stop here, the next run resumes
            raise KeyboardInterrupt("extraction stopped")

    try:
        result = extract_archive(archive, dest, limits=run.archive_limits, on_member=keep_going,
                                 identity=outcome.record.sha256)
    except ArchiveError as err:  # includes UnsafeArchiveError: the archive stays, nothing unsafe is written
        outcome.record = dataclasses.replace(outcome.record, status="corrupt",
                                             error=f"extraction refused: {type(err).__name__}: {err}")
        return
    outcome.extracted = result.extracted


def _expand_items(run: _Run, task: _Task, outcome: _Outcome) -> None:
    """Turn a url_list file into one task per entry (the first `limit`), or mark the list corrupt."""
    src = task.source
    try:
        data = json.loads((run.root / task.path).read_text())
        entries = data.items() if isinstance(data, dict) else ((e.get("id"), e) for e in data)
        seen: set[str] = set()
        for key, entry in entries:
            if run.limit and len(outcome.items) >= run.limit:
                break
            item = _item_task(run, src, "" if key is None else str(key), entry)
            if item.path not in seen:  # a repeated id is the same file: one row, one download
                seen.add(item.path)
                outcome.items.append(item)
    except (ValueError, AttributeError, TypeError) as err:
        outcome.record = dataclasses.replace(outcome.record, status="corrupt",
                                             error=f"not a JSON list of entries with {src.items_url_key!r}: {err}")
        outcome.items = []


def _item_task(run: _Run, src: SourceFile, key: str, entry) -> _Task:
    url = entry.get(src.items_url_key) if isinstance(entry, dict) else entry
    if "/" in key or "\\" in key or key in ("", ".", ".."):
        # The row keeps a quoted, harmless path: nobody joining it to the root can escape.
        rel = src.items_dest.format(id=quote(key, safe="") or "%00")
        return _Task(rel, None, None, None, "", None, f"refused: entry id {key!r} is not a plain file name")
    rel = check_relative(src.items_dest.format(id=key), "item")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return _Task(rel, None, None, None, "", None, f"entry {key!r} has no http(s) {src.items_url_key}")
    return _task_for(run, rel, url, None, None, None)


# --------------------------------------------------------------------------------------------------
# HTTP


def _fetch(run: _Run, task: _Task, part: Path) -> tuple[int, str, int]:
    """Download `task.url` into `part`, resuming; return (size, sha256, bytes received this call)."""
    host = urlsplit(task.url).netloc
    received = 0
    for attempt in range(run.retries + 1):
        run.hosts.check(host)
        try:
            size, sha, got = _attempt(run, task, part, host)
            return size, sha, received + got
        except _SourceError:
            raise
        except Exception as err:  # classified below; unknown kinds are re-raised as fatal
            kind, why, delay = _classify(err)
            received += getattr(err, "received", 0)
            if kind == "fatal":
                raise
            if kind == "permanent":
                raise _SourceError("missing", f"{why} ({task.url})") from None
            if attempt == run.retries:
                if kind == "unreachable":
                    run.hosts.mark_down(host, why)
                    raise _SourceError("unreachable", f"{host}: {why} ({task.url})") from None
                raise _SourceError("missing", f"gave up after {attempt + 1} attempts: {why} ({task.url})") from None
            wait_s = max(delay, min(run.backoff_s * 2**attempt, run.max_backoff_s))
            log.info("%s: %s; retry %d/%d in %.1f s", task.url, why, attempt + 1, run.retries, wait_s)
            if run.stop.wait(wait_s):
                raise KeyboardInterrupt("download stopped") from None
    raise AssertionError("not reached: the last attempt returns or raises")


def _attempt(run: _Run, task: _Task, part: Path, host: str) -> tuple[int, str, int]:
    offset = part.stat().st_size if part.exists() else 0
    if task.size is not None and offset > task.size:
        offset = _truncate(part)
    if task.size is not None and offset == task.size and offset > 0:  # finished earlier, not yet verified
        return offset, _hash_file(part), 0
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


def _stream(run: _Run, resp, part: Path, offset: int, length: int | None) -> tuple[int, str, int]:
    hasher = _hash_file(part, limit=offset) if offset else hashlib.sha256()
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


def _agree_on_offset(run: _Run, resp, part: Path, offset: int) -> int:
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
        return offset, _hash_file(part), 0
    _truncate(part)
    raise _Incomplete(f"range not satisfiable (server size {total or '?'}, have {offset}); restarting")


def _reject_html(resp, task: _Task) -> None:
    if resp.headers.get_content_type() == "text/html" and not task.path.endswith((".html", ".htm")):
        raise _SourceError("missing", f"the server sent an HTML page instead of the file (login, consent or quota "
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
