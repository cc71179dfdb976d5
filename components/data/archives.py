"""Safe, streaming, resumable extraction of zip and tar(.gz/.bz2/.xz) archives.

Why not `extractall`: downloaded archives are untrusted input. A member named `../x` or `/etc/x`, a
symlink pointing out of the destination, or a few kilobytes that inflate to terabytes (a zip bomb)
must be refused before anything is written, and the refusal must name the member and the rule.

Rules (`UnsafeArchiveError` otherwise): relative member paths only, no `..` component, no drive or
backslash tricks; regular files and directories only (no symlinks, hard links, devices, FIFOs); at most
`max_members` members and `max_total_bytes` declared in total; no member (and not the archive as a
whole) with a compression ratio above `max_ratio`. The declared sizes are checked up front, and the
actual bytes are counted while streaming: a member that inflates past its declared size, or past the
total bound, is aborted and its partial output removed.

Resumable: every member is written to a temporary name and renamed when complete, then appended to a
state file (`<dest>/.extract-state.<archive name>.jsonl`). A re-run after an interruption skips the
recorded members; a completed extraction of the same archive (same size and mtime) is a no-op.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

GiB = 1024**3
MiB = 1024**2
CHUNK = MiB


class ArchiveError(RuntimeError):
    """The archive cannot be extracted (unreadable, corrupt, or not enough disk space)."""


class UnsafeArchiveError(ArchiveError):
    """A member breaks a safety rule; nothing of it (or, for up-front checks, of the archive) was written."""

    def __init__(self, archive: str | Path, member: str, rule: str):
        self.archive, self.member, self.rule = str(archive), member, rule
        super().__init__(f"{archive}: unsafe member {member!r}: {rule}")


class InsufficientDiskSpaceError(OSError):
    """Not enough free space for what is about to be written (raised before writing)."""


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds for untrusted archives. The defaults fit the real catalog (GQA images: ~20 GB, ratio ~1)."""

    max_total_bytes: int = 64 * GiB  # declared (and actual) uncompressed bytes, all members together
    max_members: int = 5_000_000
    max_ratio: float = 200.0  # uncompressed / compressed; JSON compresses ~10-20x, zip bombs ~1000x
    ratio_floor_bytes: int = MiB  # members smaller than this skip the ratio rule (tiny files compress oddly)


DEFAULT_LIMITS = ArchiveLimits()


@dataclass(frozen=True)
class ExtractResult:
    members: int  # regular-file members in the archive
    bytes: int  # their uncompressed bytes
    extracted: int  # members written by this call
    skipped: int  # members already extracted by an earlier, interrupted call
    up_to_date: bool  # the archive had already been extracted completely: nothing was done


@dataclass(frozen=True)
class _Member:
    name: str  # the safe relative path (posix)
    size: int
    compressed: int | None  # zip only
    is_dir: bool
    ref: zipfile.ZipInfo | tarfile.TarInfo


def archive_format(path: str | Path) -> str:
    """'zip' or 'tar', from the content (not the file name): download names can lie."""
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise ArchiveError(f"{path}: neither a zip nor a tar archive")


def safe_member_path(archive: str | Path, name: str) -> str:
    """Normalise a member name to a relative posix path, or raise naming the rule it breaks."""
    if not name or "\x00" in name:
        raise UnsafeArchiveError(archive, name, "empty name or NUL byte")
    posix = name.replace("\\", "/")  # zips written on Windows may use backslashes
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise UnsafeArchiveError(archive, name, "absolute path")
    parts = [p for p in PurePosixPath(posix).parts if p != "."]
    if ".." in parts:
        raise UnsafeArchiveError(archive, name, "'..' path component")
    if not parts:
        raise UnsafeArchiveError(archive, name, "empty path")
    return "/".join(parts)


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[_Member]:
    members = []
    for info in zf.infolist():
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the writer recorded permissions only
        if kind == stat.S_IFLNK:
            raise UnsafeArchiveError(archive, info.filename, "symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchiveError(archive, info.filename, "special file (device, FIFO or socket)")
        if info.flag_bits & 0x1:  # zipfile would raise RuntimeError mid-extraction asking for a password
            raise UnsafeArchiveError(archive, info.filename, "encrypted member (password-protected zip)")
        name = safe_member_path(archive, info.filename)
        members.append(_Member(name, info.file_size, info.compress_size, info.is_dir(), info))
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[_Member]:
    members = []
    for info in tf.getmembers():
        if info.issym():
            raise UnsafeArchiveError(archive, info.name, f"symbolic link (-> {info.linkname})")
        if info.islnk():
            raise UnsafeArchiveError(archive, info.name, f"hard link (-> {info.linkname})")
        if info.isdev() or info.isfifo():
            raise UnsafeArchiveError(archive, info.name, "device file or FIFO")
        if not (info.isreg() or info.isdir()):
            raise UnsafeArchiveError(archive, info.name, f"unsupported member type {info.type!r}")
        name = safe_member_path(archive, info.name)
        members.append(_Member(name, info.size, None, info.isdir(), info))
    return members


def check_layout(archive: Path, members: list[_Member]) -> None:
    """One name, one member: a file given twice (the last would win silently), a name that is both a file and
    a folder (`a` and `a/b`, or a tar's folder and file of one name) cannot be extracted as the archive says."""
    files, folders = set(), set()
    for m in members:
        if m.is_dir:
            folders.add(m.name)
            continue
        if m.name in files:
            raise UnsafeArchiveError(archive, m.name, "the same file name twice (one would silently replace the other)")
        files.add(m.name)
        parts = m.name.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    both = sorted(files & folders)
    if both:
        raise UnsafeArchiveError(archive, both[0], "a file and a folder of the same name")


def check_members(archive: Path, members: list[_Member], limits: ArchiveLimits) -> int:
    """The up-front checks: the layout (check_layout), the bounds on declared sizes; return the declared total."""
    check_layout(archive, members)
    if len(members) > limits.max_members:
        raise UnsafeArchiveError(archive, members[limits.max_members].name,
                                 f"more than {limits.max_members} members")
    total = 0
    for m in members:
        total += m.size
        if total > limits.max_total_bytes:
            raise UnsafeArchiveError(archive, m.name, f"declared sizes exceed the {limits.max_total_bytes} byte bound")
        if m.compressed is not None and m.size >= limits.ratio_floor_bytes:
            ratio = m.size / max(m.compressed, 1)
            if ratio > limits.max_ratio:
                rule = f"compression ratio {ratio:.0f}:1 exceeds {limits.max_ratio:.0f}:1 (zip bomb?)"
                raise UnsafeArchiveError(archive, m.name, rule)
    packed = archive.stat().st_size
    if total >= limits.ratio_floor_bytes and total / max(packed, 1) > limits.max_ratio:
        raise UnsafeArchiveError(archive, "*", f"archive expands {total / max(packed, 1):.0f}x "
                                               f"(> {limits.max_ratio:.0f}x) (zip/tar bomb?)")
    return total


@contextmanager
def _open_members(archive: Path) -> Iterator[tuple[list[_Member], Callable[[_Member], BinaryIO]]]:
    """The validated member list plus a function that opens one member for streaming."""
    try:
        if archive_format(archive) == "zip":
            with zipfile.ZipFile(archive) as zf:
                yield _zip_members(archive, zf), lambda m: _open_zip_member(zf, m)
        else:
            with tarfile.open(archive, "r:*") as tf:
                yield _tar_members(archive, tf), lambda m: tf.extractfile(m.ref)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise ArchiveError(f"{archive}: unreadable archive: {err}") from err


def _open_zip_member(zf: zipfile.ZipFile, m: _Member) -> BinaryIO:
    # zipfile stops at the declared size and then fails the CRC, which hides *why* the data is bad.
    # Two chunks of headroom let the byte counter in _copy_member see, and name, a member that
    # inflates past what its header declares.
    probe = copy.copy(m.ref)
    probe.file_size = m.size + 2 * CHUNK
    return zf.open(probe)


def _read_state(path: Path, identity: dict) -> list[dict]:
    """The state records after the header, or [] when the state is absent or belongs to another archive."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:  # the last line, cut by a kill mid-write: what came before still counts
            break
    return records[1:] if records and records[0] == {"archive": identity} else []


class _State:
    """Append-only log of completed members: O(1) per member, survives a kill at any point."""

    def __init__(self, path: Path, identity: dict):
        records = _read_state(path, identity)  # [] for a fresh start, or when another archive wrote it
        self.done: set[str] = {r["member"] for r in records if "member" in r}
        # Rewrite what is valid, so appends never follow a line torn by a kill.
        lines = [{"archive": identity}] + [{"member": m} for m in sorted(self.done)]
        path.write_text("".join(json.dumps(r) + "\n" for r in lines))
        self._fh = path.open("a")

    def add(self, member: str) -> None:
        self._fh.write(json.dumps({"member": member}) + "\n")
        self._fh.flush()
        self.done.add(member)

    def finish(self, members: int, nbytes: int) -> None:
        self._fh.write(json.dumps({"complete": True, "members": members, "bytes": nbytes}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def default_state_path(archive: Path, dest: Path) -> Path:
    return dest / f".extract-state.{archive.name}.jsonl"


def _target(archive: Path, dest_resolved: Path, name: str) -> Path:
    """`dest/name`, refusing a path that resolves outside dest (e.g. through a pre-existing symlink)."""
    target = (dest_resolved / name).resolve()
    if target != dest_resolved and dest_resolved not in target.parents:
        raise UnsafeArchiveError(archive, name, f"resolves outside the destination ({target})")
    return target


def _copy_member(archive: Path, src: BinaryIO, m: _Member, target: Path, budget: int) -> int:
    """Stream one member to a temp file, counting bytes; rename when complete. Return bytes written."""
    tmp = target.with_name(f".{target.name}.extracting")
    written = 0
    try:
        with tmp.open("wb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > m.size:
                    raise UnsafeArchiveError(archive, m.name, f"inflates past its declared size of {m.size} bytes")
                if written > budget:
                    raise UnsafeArchiveError(archive, m.name, "actual bytes exceed the archive size bound")
                out.write(chunk)
        if written != m.size:
            raise ArchiveError(f"{archive}: member {m.name!r} is truncated ({written} of {m.size} bytes)")
        os.replace(tmp, target)
    except zipfile.BadZipFile as err:
        raise ArchiveError(f"{archive}: member {m.name!r} is corrupt: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _check_space(dest: Path, need: int) -> None:
    free = shutil.disk_usage(dest).free
    if need > free:
        raise InsufficientDiskSpaceError(
            f"extracting into {dest} needs {need / GiB:.2f} GiB but only {free / GiB:.2f} GiB is free")


def extract_archive(
    archive: str | Path,
    dest: str | Path,
    limits: ArchiveLimits = DEFAULT_LIMITS,
    on_member: Callable[[str, int], None] | None = None,
    state_path: str | Path | None = None,
    identity: str | None = None,
) -> ExtractResult:
    """Extract `archive` (zip or tar, by content) into `dest` safely and resumably.

    Every member is validated before the first byte is written. `on_member(name, nbytes)` is called
    after each member is in place (progress; an exception from it interrupts the extraction, which
    a later call resumes). `identity` (e.g. the archive's sha256) says which archive the state belongs
    to; by default its size and mtime do, so a re-downloaded archive is extracted afresh.
    """
    archive, dest = Path(archive), Path(dest)
    st = archive.stat()
    identity = {"name": archive.name, "size": st.st_size, "id": identity or st.st_mtime_ns}
    state_path = Path(state_path) if state_path else default_state_path(archive, dest)
    for record in _read_state(state_path, identity):
        if record.get("complete"):  # no-op without even opening the archive
            return ExtractResult(record["members"], record["bytes"], 0, record["members"], up_to_date=True)
    with _open_members(archive) as (members, open_member):
        check_members(archive, members, limits)  # before anything is created or written
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        targets = {m.name: _target(archive, root, m.name) for m in members}
        clobbered = [name for name, target in targets.items() if target == state_path.resolve()]
        if clobbered:
            raise UnsafeArchiveError(archive, clobbered[0], "would overwrite the extraction state file")
        state = _State(state_path, identity)
        try:
            return _extract_all(archive, dest, members, targets, open_member, state, limits, on_member)
        finally:
            state.close()


def _extract_all(archive, dest, members, targets, open_member, state, limits, on_member) -> ExtractResult:
    todo = [m for m in members if not m.is_dir and not _already_done(targets[m.name], m, state)]
    _check_space(dest, sum(m.size for m in todo))
    todo_names = {m.name for m in todo}
    budget = limits.max_total_bytes
    for m in members:
        target = targets[m.name]
        if m.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        if m.name not in todo_names:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(m) as src:
            budget -= _copy_member(archive, src, m, target, budget)
        state.add(m.name)
        if on_member is not None:
            on_member(m.name, m.size)
    files = [m for m in members if not m.is_dir]
    nbytes = sum(m.size for m in files)
    state.finish(len(files), nbytes)
    return ExtractResult(len(files), nbytes, len(todo), len(files) - len(todo), up_to_date=False)


def _already_done(target: Path, m: _Member, state: _State) -> bool:
    """Recorded as done and still on disk with the right size (a deleted file is extracted again)."""
    if m.name not in state.done:
        return False
    try:
        return target.stat().st_size == m.size
    except OSError:
        return False
