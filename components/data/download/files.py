"""One file, end to end: verify what is on disk, download it (one fresh download after a mismatch),
move it into place atomically, and extract it when it is an archive."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from ..archives import ArchiveError, extract_archive
from .context import DownloadRun, DownloadTask, TaskOutcome
from .http import SourceError, fetch_resuming
from .lock import LOCK_NAME, hash_file
from .manifest import FileRecord

log = logging.getLogger(__name__)


def ensure_file(run: DownloadRun, task: DownloadTask) -> TaskOutcome:
    """Present and verified after this call, or a record saying why not."""
    dest = run.root / task.path
    if task.url is None:
        if dest.exists():  # placed by hand (browser-only or on-request sources)
            return TaskOutcome(_verify_existing(run, task, dest) or _corrupt_existing(task, dest))
        return TaskOutcome(FileRecord(task.path, None, None, None, "missing", f"no download URL: {task.note}"))
    tries = 2  # a verification failure earns exactly one fresh download
    if dest.exists():
        record = _verify_existing(run, task, dest)
        if record is not None:
            return TaskOutcome(record)
        log.warning("%s/%s: the file on disk does not match the %s; downloading it again",
                    run.dataset.name, task.path, "catalog" if task.pinned_by == "catalog" else LOCK_NAME)
        dest.unlink()
        tries = 1  # that was the first mismatch
    return _download(run, task, dest, tries)


def _mismatch(task: DownloadTask, size: int, sha: str) -> str | None:
    if task.size is not None and size != task.size:
        return f"size {size} differs from the expected {task.size} ({task.pinned_by or 'catalog'})"
    if task.sha256 is not None and sha != task.sha256:
        where = "catalog" if task.pinned_by == "catalog" else LOCK_NAME
        return f"sha256 {sha[:12]}... differs from {task.sha256[:12]}... recorded in the {where}"
    return None


def _verify_existing(run: DownloadRun, task: DownloadTask, dest: Path) -> FileRecord | None:
    size, sha = run.cache.sha(task.path, dest, force=run.verify_existing)
    if _mismatch(task, size, sha) is not None:
        return None
    if task.sha256 is None:
        run.lock.record(task.path, task.url, size, sha)
    return FileRecord(task.path, size, sha, task.url, "present")


def _corrupt_existing(task: DownloadTask, dest: Path) -> FileRecord:
    size = dest.stat().st_size
    sha = hash_file(dest)
    return FileRecord(task.path, size, sha, None, "corrupt", _mismatch(task, size, sha) or "")


def _download(run: DownloadRun, task: DownloadTask, dest: Path, tries: int) -> TaskOutcome:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    fetched, problem = 0, ""
    for attempt in range(tries):
        try:
            size, sha, received = fetch_resuming(run, task, part)
        except SourceError as err:
            return TaskOutcome(FileRecord(task.path, None, None, task.url, "missing", str(err)),
                            network="unreachable" if err.kind == "unreachable" else "reached",
                            fetched_bytes=fetched)
        fetched += received
        problem = _mismatch(task, size, sha)
        if problem is None:
            os.replace(part, dest)
            run.cache.put(task.path, dest, sha)
            if task.sha256 is None:
                run.lock.record(task.path, task.url, size, sha)
            return TaskOutcome(FileRecord(task.path, size, sha, task.url, "present"), "reached", True, fetched)
        part.unlink(missing_ok=True)
        again = "; downloading it again" if attempt + 1 < tries else ""
        log.warning("%s/%s: %s%s", run.dataset.name, task.path, problem, again)
    error = f"{problem} (also after a fresh download; the upstream file may have changed"
    error += f": delete its entry in {LOCK_NAME} to accept it)" if task.pinned_by == "lock" else ")"
    return TaskOutcome(FileRecord(task.path, None, None, task.url, "corrupt", error), "reached", False, fetched)


def extract_downloaded(run: DownloadRun, task: DownloadTask, outcome: TaskOutcome) -> None:
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
