"""What a download run produces: the errors it raises, one `FileRecord` per catalog entry, the
`DownloadReport`, and the per-dataset `manifest.parquet` (schema, read, write, combined table)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from components.atomic import write_table_atomically

MANIFEST_NAME = "manifest.parquet"
MANIFEST_SCHEMA = pa.schema([
    ("path", pa.string()),  # relative to <raw_root>/<dataset>/
    ("bytes", pa.int64()),
    ("sha256", pa.string()),
    ("source", pa.string()),  # the URL (null for sources without one)
    ("status", pa.string()),  # present | missing | corrupt
    ("error", pa.string()),  # why it is not present ("" when present)
])


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


def combined_manifest(reports: Iterable[DownloadReport]) -> pa.Table:
    rows = [{**dataclasses.asdict(r), "path": f"{rep.dataset}/{r.path}", "dataset": rep.dataset}
            for rep in reports for r in rep.records]
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA.append(pa.field("dataset", pa.string())))


def write_manifest(records: Iterable[FileRecord], path: str | Path) -> None:
    path = Path(path)
    rows = [dataclasses.asdict(r) for r in records]
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    write_table_atomically(table, path)


def read_manifest(path: str | Path) -> list[FileRecord]:
    return [FileRecord(**row) for row in pq.read_table(path, schema=MANIFEST_SCHEMA).to_pylist()]
