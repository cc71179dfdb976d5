"""Running downloads: `download_dataset` / `download_datasets` / `download_all`, the thread pool, the
disk-space check before fetching, and the offline verdict."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import pyarrow as pa

from ..archives import DEFAULT_LIMITS, ArchiveLimits, InsufficientDiskSpaceError
from ..catalog import CATALOG, Dataset, get_dataset, with_dependencies
from .context import ByteProgress, DownloadRun, DownloadTask, TaskOutcome, task_for
from .files import ensure_file, extract_downloaded
from .lock import CACHE_NAME, LOCK_NAME, HashCache, SourcesLock
from .manifest import (
    MANIFEST_NAME,
    DownloadReport,
    FileRecord,
    NetworkUnreachableError,
    combined_manifest,
    write_manifest,
)
from .urllist import expand_url_list

log = logging.getLogger(__name__)


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
    run = DownloadRun(ds, root, max(1, workers), max(0, retries), backoff_s, max_backoff_s, timeout_s, verify_existing,
               extract, archive_limits, limit, SourcesLock(root / LOCK_NAME), HashCache(root / CACHE_NAME),
               ByteProgress(progress, f"download {ds.name}"))
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


def _run_all(run: DownloadRun) -> list[TaskOutcome]:
    files = run.dataset.files[: run.limit] if run.limit else run.dataset.files
    tasks = [task_for(run, f.dest, f.url, f.size, f.sha256, f, f.note) for f in files]
    _check_disk_space(run, tasks)
    outcomes = _parallel(run, _process_file, tasks)
    items = [item for o in outcomes for item in o.items]
    if items:
        outcomes += _parallel(run, _process_item, items)
    return outcomes


def _parallel(
    run: DownloadRun, fn: Callable[[DownloadRun, DownloadTask], TaskOutcome], tasks: list[DownloadTask]
) -> list[TaskOutcome]:
    """Results in task order; at most 4 x workers tasks queued, so 200K url_list items stay cheap."""
    results: list[TaskOutcome | None] = [None] * len(tasks)
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


def _check_disk_space(run: DownloadRun, tasks: list[DownloadTask]) -> None:
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


def _raise_if_offline(run: DownloadRun, outcomes: list[TaskOutcome]) -> None:
    tried = [o for o in outcomes if o.network != "none"]
    if tried and all(o.network == "unreachable" for o in tried):
        raise NetworkUnreachableError(run.dataset.name, dict(run.hosts.down) or {"?": "unreachable"})


def _process_file(run: DownloadRun, task: DownloadTask) -> TaskOutcome:
    outcome = ensure_file(run, task)
    src = task.source
    if outcome.record.status != "present" or src is None:
        return outcome
    if src.is_archive and run.extract:
        extract_downloaded(run, task, outcome)
    elif src.kind == "url_list":
        expand_url_list(run, task, outcome)
    return outcome


def _process_item(run: DownloadRun, task: DownloadTask) -> TaskOutcome:
    if task.url is None:
        return TaskOutcome(FileRecord(task.path, None, None, None, "missing", task.note))
    return ensure_file(run, task)
