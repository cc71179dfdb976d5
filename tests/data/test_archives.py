"""Safe extraction: every unsafe archive is refused by name and rule, with nothing written outside dest."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from components.data.archives import (
    ArchiveError,
    ArchiveLimits,
    UnsafeArchiveError,
    extract_archive,
    safe_member_path,
)


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(dest, outside): the archive may only write under dest; outside must stay empty."""
    dest, outside = tmp_path / "box" / "dest", tmp_path / "outside"
    outside.mkdir(parents=True)
    return dest, outside


def test_zip_extracts_nested_members_with_counts(tmp_path, sandbox):
    dest, _ = sandbox
    members = {"train2017/a.jpg": b"a" * 1000, "train2017/sub/b.jpg": b"bb" * 700, "top.txt": b"t"}
    archive = make_zip(tmp_path / "x.zip", members)
    result = extract_archive(archive, dest)
    assert (result.members, result.bytes, result.extracted, result.skipped) == (3, 2401, 3, 0)
    for name, data in members.items():
        assert (dest / name).read_bytes() == data
    assert not any(p.name.endswith(".extracting") for p in dest.rglob("*"))


def test_tar_gz_extracts(tmp_path, sandbox):
    dest, _ = sandbox
    archive = make_tar(tmp_path / "x.tar.gz", [("d/a.bin", b"1" * 10), ("b.bin", b"22")], mode="w:gz")
    result = extract_archive(archive, dest)
    assert (result.members, result.bytes) == (2, 12)
    assert (dest / "d/a.bin").read_bytes() == b"1" * 10


@pytest.mark.parametrize("name, rule", [
    ("../evil.txt", "'..'"),
    ("ok/../../evil.txt", "'..'"),
    ("..\\evil.txt", "'..'"),
    ("C:/evil.txt", "absolute"),
])
def test_zip_path_traversal_refused(tmp_path, sandbox, name, rule):
    dest, outside = sandbox
    archive = make_zip(tmp_path / "x.zip", {"fine.txt": b"ok", name: b"evil"})
    with pytest.raises(UnsafeArchiveError, match=rule) as info:
        extract_archive(archive, dest)
    assert info.value.member == name
    assert not dest.exists()  # refused up front: not even the destination was created
    assert not (tmp_path / "box" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_zip_absolute_path_refused(tmp_path, sandbox):
    dest, outside = sandbox
    target = outside / "abs_evil.txt"
    archive = make_zip(tmp_path / "x.zip", {str(target): b"evil"})
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        extract_archive(archive, dest)
    assert not target.exists() and not dest.exists()


def test_zip_symlink_member_refused(tmp_path, sandbox):
    dest, _ = sandbox
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        extract_archive(archive, dest)
    assert not dest.exists()


def _tar_special(kind: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(f"special_{kind}")
    info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE,
                 "fifo": tarfile.FIFOTYPE}[kind]
    info.linkname = "/etc/passwd" if kind in ("sym", "hard") else ""
    return info


@pytest.mark.parametrize("kind, rule", [("sym", "symbolic link"), ("hard", "hard link"), ("chr", "device"),
                                        ("fifo", "FIFO")])
def test_tar_links_and_devices_refused(tmp_path, sandbox, kind, rule):
    dest, outside = sandbox
    archive = make_tar(tmp_path / "x.tar", [("fine.txt", b"ok"), _tar_special(kind)])
    with pytest.raises(UnsafeArchiveError, match=rule) as info:
        extract_archive(archive, dest)
    assert info.value.member == f"special_{kind}"
    assert not dest.exists() and not any(outside.iterdir())


def test_tar_traversal_refused(tmp_path, sandbox):
    dest, _ = sandbox
    archive = make_tar(tmp_path / "x.tar", [("../../evil.txt", b"evil")])
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.'"):
        extract_archive(archive, dest)
    assert not (tmp_path / "evil.txt").exists()


def test_zip_bomb_ratio_refused(tmp_path, sandbox):
    dest, _ = sandbox
    archive = make_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(20 * 1024 * 1024)})
    assert archive.stat().st_size < 100_000
    with pytest.raises(UnsafeArchiveError, match="compression ratio") as info:
        extract_archive(archive, dest)
    assert info.value.member == "zeros.bin"
    assert not dest.exists()


def test_declared_total_bound(tmp_path, sandbox):
    dest, _ = sandbox
    archive = make_zip(tmp_path / "x.zip", {"a": os.urandom(600), "b": os.urandom(600)}, zipfile.ZIP_STORED)
    with pytest.raises(UnsafeArchiveError, match="declared sizes exceed") as info:
        extract_archive(archive, dest, limits=ArchiveLimits(max_total_bytes=1000))
    assert info.value.member == "b"


def _patch_declared_size(archive: Path, new_size: int) -> None:
    """Make the headers lie: declare `new_size` uncompressed bytes for the (only) member."""
    data = bytearray(archive.read_bytes())
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    data[local + 22:local + 26] = struct.pack("<I", new_size)
    data[central + 24:central + 28] = struct.pack("<I", new_size)
    archive.write_bytes(bytes(data))


def test_member_inflating_past_declared_size_is_aborted(tmp_path, sandbox):
    dest, _ = sandbox
    payload = os.urandom(50_000).hex().encode()  # 100 KB that deflates about 2:1
    archive = make_zip(tmp_path / "liar.zip", {"liar.bin": payload})
    _patch_declared_size(archive, 1000)
    assert zipfile.ZipFile(archive).getinfo("liar.bin").file_size == 1000
    with pytest.raises(UnsafeArchiveError, match="inflates past its declared size") as info:
        extract_archive(archive, dest)
    assert info.value.member == "liar.bin"
    assert files_under(dest) == {".extract-state.liar.zip.jsonl"}  # the partial member was removed


def test_corrupt_member_is_an_archive_error_not_written(tmp_path, sandbox):
    dest, _ = sandbox
    archive = make_zip(tmp_path / "x.zip", {"a.bin": b"abcdefgh" * 100}, zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    data[60] ^= 0xFF  # inside the stored data: the CRC no longer matches
    archive.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="corrupt"):
        extract_archive(archive, dest)
    assert not (dest / "a.bin").exists()


def test_preexisting_symlink_out_of_dest_refused(tmp_path, sandbox):
    dest, outside = sandbox
    dest.mkdir(parents=True)
    (dest / "images").symlink_to(outside, target_is_directory=True)
    archive = make_zip(tmp_path / "x.zip", {"images/a.jpg": b"x"})
    with pytest.raises(UnsafeArchiveError, match="outside the destination"):
        extract_archive(archive, dest)
    assert not any(outside.iterdir())


def test_interrupted_extraction_resumes_then_is_a_noop(tmp_path, sandbox):
    dest, _ = sandbox
    members = {f"img/{i:03d}.jpg": os.urandom(100 + i) for i in range(8)}
    archive = make_zip(tmp_path / "x.zip", members)
    seen: list[str] = []

    def crash_after_three(name: str, nbytes: int) -> None:
        seen.append(name)
        if len(seen) == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        extract_archive(archive, dest, on_member=crash_after_three)
    assert len(files_under(dest / "img")) == 3

    written: list[str] = []
    result = extract_archive(archive, dest, on_member=lambda n, b: written.append(n))
    assert (result.extracted, result.skipped, result.members) == (5, 3, 8)
    assert sorted(written) == sorted(set(members) - set(seen))
    for name, data in members.items():
        assert (dest / name).read_bytes() == data

    again = extract_archive(archive, dest)
    assert again.up_to_date and again.extracted == 0 and again.members == 8


def test_deleted_member_is_extracted_again(tmp_path, sandbox):
    dest, _ = sandbox
    archive = make_zip(tmp_path / "x.zip", {"a": b"1", "b": b"2"})
    extract_archive(archive, dest)  # then pretend it was interrupted after 'a', and 'a' was lost since
    state = dest / ".extract-state.x.zip.jsonl"
    lines = state.read_text().splitlines()
    state.write_text("\n".join(lines[:2]) + "\n")  # header + 'a'
    (dest / "a").unlink()
    result = extract_archive(archive, dest)
    assert result.extracted == 2 and (dest / "a").read_bytes() == b"1"


def test_safe_member_path_normalises():
    assert safe_member_path("x.zip", "./a//b/./c.jpg") == "a/b/c.jpg"
    assert safe_member_path("x.zip", "dir\\file.txt") == "dir/file.txt"
    with pytest.raises(UnsafeArchiveError, match="NUL"):
        safe_member_path("x.zip", "a\x00b")


def test_state_with_a_torn_last_line_still_resumes(tmp_path, sandbox):
    dest, _ = sandbox
    archive = make_zip(tmp_path / "x.zip", {"a": b"1", "b": b"2", "c": b"3"})
    extract_archive(archive, dest)
    state = dest / ".extract-state.x.zip.jsonl"
    header, first = state.read_text().splitlines()[:2]
    state.write_text(f"{header}\n{first}\n{{\"mem")  # killed while writing the second record
    result = extract_archive(archive, dest)
    assert (result.skipped, result.extracted) == (1, 2)
    assert extract_archive(archive, dest).up_to_date


def test_tar_gz_bomb_refused_by_the_archive_ratio(tmp_path, sandbox):
    dest, _ = sandbox
    archive = make_tar(tmp_path / "bomb.tar.gz", [("zeros.bin", bytes(20 * 1024 * 1024))], mode="w:gz")
    with pytest.raises(UnsafeArchiveError, match="archive expands"):
        extract_archive(archive, dest)
    assert not dest.exists()


def _zip_entries(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    """A zip that may hold one name twice (zipfile warns but writes it, as other writers do)."""
    import warnings

    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _tar_dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


@pytest.mark.parametrize("build, member, rule", [
    (lambda p: _zip_entries(p / "x.zip", [("a", b"1"), ("a/b", b"2")]), "a", "a file and a folder"),
    (lambda p: make_tar(p / "x.tar", [_tar_dir("d"), ("d", b"file")]), "d", "a file and a folder"),
    (lambda p: _zip_entries(p / "x.zip", [("img/1.jpg", b"one"), ("img/1.jpg", b"two")]), "img/1.jpg",
     "the same file name twice"),
    (lambda p: make_tar(p / "x.tar", [("x.txt", b"one"), ("x.txt", b"two")]), "x.txt", "the same file name twice"),
])
def test_members_that_cannot_all_be_extracted_are_refused_before_writing(tmp_path, sandbox, build, member, rule):
    """The audit's crashes (FileExistsError, IsADirectoryError) and the silent last-one-wins, refused up front:
    the download stage turns this error into a manifest row with status `corrupt` and the reason."""
    dest, _ = sandbox
    with pytest.raises(UnsafeArchiveError, match=rule) as info:
        extract_archive(build(tmp_path), dest)
    assert info.value.member == member and not dest.exists()


def test_encrypted_zip_member_is_refused_not_a_runtime_error(tmp_path, sandbox):
    dest, _ = sandbox
    archive = make_zip(tmp_path / "x.zip", {"secret.txt": b"data"}, compression=zipfile.ZIP_STORED)
    raw = bytearray(archive.read_bytes())  # set the "encrypted" flag bit in the local and the central header
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.index(signature)
        raw[at + flag_offset] |= 0x1
    archive.write_bytes(bytes(raw))
    with pytest.raises(UnsafeArchiveError, match="encrypted member"):
        extract_archive(archive, dest)
    assert not dest.exists()
