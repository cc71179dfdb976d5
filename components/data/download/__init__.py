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

The package, one concept a module: `manifest` (errors, records, report, manifest.parquet), `lock`
(sources.lock.json, the stat cache, file hashing), `http` (one resumable, retried, hashed fetch; host
bookkeeping), `context` (a run's shared state), `files` (verify / download / extract one file),
`urllist` (the per-image URL-list kind), `run` (the public entry points, thread pool, disk-space check).
"""

from ..archives import InsufficientDiskSpaceError
from .http import USER_AGENT as USER_AGENT
from .lock import CACHE_NAME as CACHE_NAME
from .lock import CHUNK as CHUNK
from .lock import LOCK_NAME as LOCK_NAME
from .manifest import MANIFEST_NAME as MANIFEST_NAME
from .manifest import (
    MANIFEST_SCHEMA,
    DownloadError,
    DownloadReport,
    FileRecord,
    NetworkUnreachableError,
    combined_manifest,
    read_manifest,
    write_manifest,
)
from .run import download_all, download_dataset, download_datasets

__all__ = [
    "DownloadError", "NetworkUnreachableError", "InsufficientDiskSpaceError", "FileRecord", "DownloadReport",
    "MANIFEST_SCHEMA", "download_dataset", "download_datasets", "download_all", "combined_manifest", "read_manifest",
    "write_manifest",
]
