"""The downloader against a real loopback HTTP server that drops, corrupts, 404s and ignores Range.

No test touches a host other than 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from components.data.catalog import CATALOG, Dataset, SourceFile, check_relative
from components.data.download import (
    LOCK_NAME,
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    InsufficientDiskSpaceError,
    NetworkUnreachableError,
    download_all,
    download_dataset,
    download_datasets,
    read_manifest,
)
from tests.data.http_fixture import FixtureServer, closed_port

FAST = dict(workers=2, retries=2, progress=False, backoff_s=0.01, timeout_s=10)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """urllib honours *_proxy variables; a proxy must never see (or be asked for) the loopback server."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    with FixtureServer() as srv:
        yield srv


def blob(n: int, seed: int = 0) -> bytes:
    return (hashlib.sha256(str(seed).encode()).digest() * (n // 32 + 1))[:n]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dataset(*files: SourceFile, name: str = "fixture") -> Dataset:
    return Dataset(name=name, description="loopback fixture", files=files)


def src(server: FixtureServer, name: str, data: bytes, *behaviours: str, pin: bool = False, **kw) -> SourceFile:
    url = server.add(name, data, *behaviours)
    return SourceFile(name, url, kw.pop("dest", name), sha256=sha(data) if pin else None, **kw)


def manifest(root: Path, ds: str = "fixture") -> dict[str, dict]:
    return {r.path: r.__dict__ for r in read_manifest(root / ds / MANIFEST_NAME)}


def test_downloads_verify_and_write_manifest_and_lock(server, tmp_path):
    a, b, c = blob(50_000, 1), blob(70_000, 2), blob(10, 3)
    ds = dataset(src(server, "a.bin", a, pin=True), src(server, "b.bin", b, size=len(b)),
                 src(server, "sub/c.json", c))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.counts == {"expected": 3, "present": 3, "missing": 0, "corrupt": 0}
    assert report.fetched_files == 3 and report.fetched_bytes == len(a) + len(b) + len(c)
    root = tmp_path / "fixture"
    assert (root / "a.bin").read_bytes() == a and (root / "sub/c.json").read_bytes() == c
    assert not list(root.rglob("*.part"))
    table = pq.read_table(root / MANIFEST_NAME)
    assert table.schema.equals(MANIFEST_SCHEMA)
    rows = manifest(tmp_path)
    assert rows["b.bin"] == {"path": "b.bin", "bytes": len(b), "sha256": sha(b), "source": server.url("b.bin"),
                             "status": "present", "error": ""}
    lock = json.loads((root / LOCK_NAME).read_text())["files"]
    assert set(lock) == {"b.bin", "sub/c.json"}  # a.bin is pinned by the catalog already
    assert lock["sub/c.json"] == {"bytes": 10, "sha256": sha(c), "url": server.url("sub/c.json")}


def test_second_run_is_a_noop(server, tmp_path):
    ds = dataset(src(server, "a.bin", blob(40_000)), src(server, "b.bin", blob(5, 1), pin=True))
    download_dataset(ds, tmp_path, **FAST)
    before = len(server.gets())
    report = download_dataset(ds, tmp_path, **FAST)
    assert len(server.gets()) == before  # not a single new request
    assert report.up_to_date and report.ok and "up to date" in report.summary()


def test_dropped_connection_resumes_with_range(server, tmp_path):
    data = blob(3 * 1024 * 1024 + 17)
    ds = dataset(src(server, "big.bin", data, "drop_once", pin=True))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.ok
    assert (tmp_path / "fixture/big.bin").read_bytes() == data
    first, second = server.gets("big.bin")
    assert first.range is None
    offset = int(re.fullmatch(r"bytes=(\d+)-", second.range).group(1))
    assert 0 < offset < len(data) and second.status == 206
    assert report.fetched_bytes == len(data)  # the first half was not downloaded twice


def test_resume_through_a_redirect_keeps_the_range(server, tmp_path):
    data = blob(1024 * 1024)
    server.add("cdn/a.bin", data, "drop_once")
    ds = dataset(SourceFile("a", server.add_redirect("resolve/main/a.bin", "cdn/a.bin"), "a.bin"))
    assert download_dataset(ds, tmp_path, **FAST).ok
    first, second = server.gets("cdn/a.bin")
    assert second.range == f"bytes={len(data) // 2}-" and second.status == 206
    assert (tmp_path / "fixture/a.bin").read_bytes() == data


def test_partial_file_from_an_earlier_run_resumes(server, tmp_path):
    data = blob(100_000)
    ds = dataset(src(server, "a.bin", data, pin=True))
    part = tmp_path / "fixture/a.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:12_345])
    assert download_dataset(ds, tmp_path, **FAST).ok
    assert [r.range for r in server.gets("a.bin")] == ["bytes=12345-"]
    assert (tmp_path / "fixture/a.bin").read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = blob(2 * 1024 * 1024)
    ds = dataset(src(server, "a.bin", data, "drop_once", "ignore_range"))
    assert download_dataset(ds, tmp_path, **FAST).ok
    first, second = server.gets("a.bin")
    assert second.range and second.range != "bytes=0-" and second.status == 200
    assert (tmp_path / "fixture/a.bin").read_bytes() == data  # not the first half twice


def test_complete_part_answered_416_is_finalised(server, tmp_path):
    data = blob(20_000)
    ds = dataset(src(server, "a.bin", data))  # size unknown: only the server can say it is complete
    part = tmp_path / "fixture/a.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    assert download_dataset(ds, tmp_path, **FAST).ok
    assert [(r.range, r.status) for r in server.gets("a.bin")] == [("bytes=20000-", 416)]
    assert (tmp_path / "fixture/a.bin").read_bytes() == data


def test_corrupt_byte_is_downloaded_again(server, tmp_path):
    data = blob(60_000)
    ds = dataset(src(server, "a.bin", data, "corrupt_once", pin=True))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.ok and (tmp_path / "fixture/a.bin").read_bytes() == data
    assert len(server.gets("a.bin")) == 2


def test_persistent_corruption_is_reported_not_used(server, tmp_path):
    good, bad = blob(100), blob(60_000, 1)
    ds = dataset(src(server, "good.bin", good), src(server, "bad.bin", bad, "corrupt_always", pin=True))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.counts == {"expected": 2, "present": 1, "missing": 0, "corrupt": 1}
    row = manifest(tmp_path)["bad.bin"]
    assert row["status"] == "corrupt" and "sha256" in row["error"] and "fresh download" in row["error"]
    assert not (tmp_path / "fixture/bad.bin").exists() and not (tmp_path / "fixture/bad.bin.part").exists()
    assert len(server.gets("bad.bin")) == 2  # downloaded once more, then given up


def test_404_is_missing_and_the_run_continues(server, tmp_path):
    ds = dataset(src(server, "gone.bin", b"x", "not_found"), src(server, "ok.bin", b"fine"))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.counts == {"expected": 2, "present": 1, "missing": 1, "corrupt": 0}
    again = download_dataset(ds, tmp_path, **FAST)
    assert again.up_to_date and not again.ok and "up to date" not in again.summary()
    row = manifest(tmp_path)["gone.bin"]
    assert row["status"] == "missing" and "404" in row["error"] and row["bytes"] is None
    assert len(server.gets("gone.bin")) == 2  # a 404 is not retried (one request per run)


def test_transient_500_is_retried(server, tmp_path):
    ds = dataset(src(server, "a.bin", b"abc", "error_500_once"))
    assert download_dataset(ds, tmp_path, **FAST).ok
    assert [r.status for r in server.gets("a.bin")] == [500, 200]


def test_html_page_instead_of_file_is_missing(server, tmp_path):
    ds = dataset(src(server, "dataset.json", b"<html>confirm</html>", "html"))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.missing == 1 and "HTML page" in manifest(tmp_path)["dataset.json"]["error"]


def test_lock_manifest_is_enforced(server, tmp_path):
    v1, v2 = blob(5000, 1), blob(5000, 2)
    ds = dataset(src(server, "a.bin", v1))
    download_dataset(ds, tmp_path, **FAST)
    lock_path = tmp_path / "fixture" / LOCK_NAME
    assert json.loads(lock_path.read_text())["files"]["a.bin"]["sha256"] == sha(v1)
    server.add("a.bin", v2)  # upstream silently changed
    (tmp_path / "fixture/a.bin").unlink()
    report = download_dataset(ds, tmp_path, **FAST)
    row = manifest(tmp_path)["a.bin"]
    assert report.corrupt == 1 and row["status"] == "corrupt" and LOCK_NAME in row["error"]
    assert json.loads(lock_path.read_text())["files"]["a.bin"]["sha256"] == sha(v1)  # the lock is not rewritten


def test_file_damaged_on_disk_is_detected_and_fetched_again(server, tmp_path):
    data = blob(5000)
    ds = dataset(src(server, "a.bin", data))
    download_dataset(ds, tmp_path, **FAST)
    target = tmp_path / "fixture/a.bin"
    target.write_bytes(data[:-1] + b"!")
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime invalidates the stat cache
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.ok and report.fetched_files == 1 and target.read_bytes() == data


def test_limit_takes_the_first_files(server, tmp_path):
    files = [src(server, f"f{i}.bin", blob(100, i)) for i in range(5)]
    report = download_dataset(dataset(*files), tmp_path, limit=2, **FAST)
    assert report.expected == 2 and {r.path for r in server.gets()} == {"f0.bin", "f1.bin"}


def _url_list(server: FixtureServer, entries: dict) -> SourceFile:
    body = json.dumps(entries).encode()
    url = server.add("dataset.json", body)
    return SourceFile("ocr", url, "ocr_vqa/dataset.json", kind="url_list", items_dest="ocr_vqa/images/{id}.jpg")


def test_url_list_fetches_items_and_reports_dead_ones(server, tmp_path):
    entries = {
        "111": {"imageURL": server.add("img/111.jpg", b"jpeg-111")},
        "222": {"imageURL": server.add("img/222.jpg", b"", "not_found")},  # a dead Amazon link
        "333": {"title": "no url"},
        "../x": {"imageURL": server.add("img/x.jpg", b"evil")},
        "444": {"imageURL": server.add("img/444.gif", b"gif-444")},
    }
    report = download_dataset(dataset(_url_list(server, entries)), tmp_path, **FAST)
    rows = manifest(tmp_path)
    assert report.counts == {"expected": 6, "present": 3, "missing": 3, "corrupt": 0}
    assert rows["ocr_vqa/dataset.json"]["status"] == "present"
    assert (tmp_path / "fixture/ocr_vqa/images/111.jpg").read_bytes() == b"jpeg-111"
    assert (tmp_path / "fixture/ocr_vqa/images/444.jpg").read_bytes() == b"gif-444"
    assert "404" in rows["ocr_vqa/images/222.jpg"]["error"]
    assert "no http(s) imageURL" in rows["ocr_vqa/images/333.jpg"]["error"]
    assert "not a plain file name" in rows["ocr_vqa/images/..%2Fx.jpg"]["error"]
    assert not server.gets("img/x.jpg") and not (tmp_path / "fixture/ocr_vqa/x.jpg").exists()


def test_url_list_as_a_json_list_and_a_broken_list(server, tmp_path):
    entries = [{"id": "7", "imageURL": server.add("img/7.jpg", b"seven")}, {"id": "7", "imageURL": "dup"}]
    good = SourceFile("l", server.add("list.json", json.dumps(entries).encode()), "list.json", kind="url_list",
                      items_dest="img/{id}.jpg")
    broken = SourceFile("b", server.add("broken.json", b"{not json"), "broken.json", kind="url_list",
                        items_dest="b/{id}.jpg")
    report = download_dataset(dataset(good, broken), tmp_path, **FAST)
    rows = manifest(tmp_path)
    assert report.counts == {"expected": 3, "present": 2, "missing": 0, "corrupt": 1}
    assert rows["img/7.jpg"]["status"] == "present" and "not a JSON list" in rows["broken.json"]["error"]


def test_url_list_limit_applies_per_list(server, tmp_path):
    entries = {str(i): {"imageURL": server.add(f"img/{i}.jpg", blob(10, i))} for i in range(6)}
    report = download_dataset(dataset(_url_list(server, entries)), tmp_path, limit=2, **FAST)
    assert report.expected == 3 and report.ok
    assert sorted(r.path for r in server.gets()) == ["dataset.json", "img/0.jpg", "img/1.jpg"]


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_archive_is_extracted_once(server, tmp_path):
    archive = _zip_bytes({"train2017/1.jpg": b"one", "train2017/2.jpg": b"two"})
    ds = dataset(src(server, "coco/train2017.zip", archive, kind="zip", extract_to="coco"))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.ok and report.extracted_members == 2
    assert (tmp_path / "fixture/coco/train2017/2.jpg").read_bytes() == b"two"
    again = download_dataset(ds, tmp_path, **FAST)
    assert again.up_to_date and again.extracted_members == 0


def test_unsafe_archive_is_reported_and_nothing_escapes(server, tmp_path):
    archive = _zip_bytes({"ok.jpg": b"ok", "../../evil.txt": b"evil"})
    ds = dataset(src(server, "x.zip", archive, kind="zip", extract_to="x"), src(server, "b.bin", b"b"))
    report = download_dataset(ds, tmp_path, **FAST)
    row = manifest(tmp_path)["x.zip"]
    assert report.counts == {"expected": 2, "present": 1, "missing": 0, "corrupt": 1}
    assert "UnsafeArchiveError" in row["error"] and "../../evil.txt" in row["error"]
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "fixture/evil.txt").exists()
    assert not (tmp_path / "fixture/x").exists()


def test_source_without_url_is_missing_with_its_note_until_placed_by_hand(tmp_path):
    note = "distributed on request: ask the authors"
    ds = dataset(SourceFile("mme", None, "mme.zip", kind="zip", extract_to=".", note=note))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.missing == 1 and note in manifest(tmp_path)["mme.zip"]["error"]
    (tmp_path / "fixture/mme.zip").write_bytes(_zip_bytes({"MME/a.txt": b"q\ta"}))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.ok and (tmp_path / "fixture/MME/a.txt").read_bytes() == b"q\ta"


def test_disk_space_is_checked_before_downloading(server, tmp_path, monkeypatch):
    ds = dataset(src(server, "a.bin", b"x" * 10, size=10), src(server, "big.zip", b"y", kind="zip",
                                                                extract_to="big", approx_bytes=3 * 10**9))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**10, 10**10 - 10**9, 10**9))
    with pytest.raises(InsufficientDiskSpaceError, match=r"need about 6\.0 GB .* only 1\.0 GB free"):
        download_dataset(ds, tmp_path, **FAST)
    assert server.gets() == []


def test_unreachable_network_is_one_clear_error(tmp_path):
    port = closed_port()
    ds = dataset(SourceFile("a", f"http://127.0.0.1:{port}/a.json", "a.json"),
                 SourceFile("b", f"http://127.0.0.1:{port}/b.zip", "b.zip", kind="zip", extract_to="b"))
    started = time.monotonic()
    with pytest.raises(NetworkUnreachableError, match=rf"127\.0\.0\.1:{port}: connection refused") as info:
        download_dataset(ds, tmp_path, **FAST)
    assert "data.source: synthetic" in str(info.value)
    assert time.monotonic() - started < 10
    rows = manifest(tmp_path)
    assert {r["status"] for r in rows.values()} == {"missing"}  # the manifest still says what is missing


def test_one_dead_host_among_live_ones_is_just_missing(server, tmp_path):
    port = closed_port()
    ds = dataset(src(server, "a.bin", b"a"), SourceFile("b", f"http://127.0.0.1:{port}/b", "b.bin"))
    report = download_dataset(ds, tmp_path, **FAST)
    assert report.counts == {"expected": 2, "present": 1, "missing": 1, "corrupt": 0}
    assert "connection refused" in manifest(tmp_path)["b.bin"]["error"]


def test_many_files_in_parallel(server, tmp_path):
    files = [src(server, f"f{i:02d}.bin", blob(200_000, i), pin=True) for i in range(12)]
    report = download_dataset(dataset(*files), tmp_path, **{**FAST, "workers": 4})
    assert report.ok and report.fetched_files == 12


def test_download_datasets_by_name(server, tmp_path):
    ds1 = dataset(src(server, "a.bin", b"a"), name="one")
    ds2 = dataset(src(server, "b.bin", b"b"), name="two")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(CATALOG, "one", ds1)
        mp.setitem(CATALOG, "two", ds2)
        reports = download_datasets(["one", "two"], tmp_path, limit=None, workers=2, retries=1, progress=False)
        with pytest.raises(KeyError, match="unknown dataset 'nope'"):
            download_datasets(["one", "nope"], tmp_path)
        table = download_all(tmp_path, limit=0, workers=2, names=["one", "two"], progress=False)
    assert list(reports) == ["one", "two"] and all(r.ok for r in reports.values())
    assert (tmp_path / "two/b.bin").read_bytes() == b"b"
    assert table.column("path").to_pylist() == ["one/a.bin", "two/b.bin"]
    assert table.column("dataset").to_pylist() == ["one", "two"] and set(table.column("status").to_pylist()) == {
        "present"}


# --------------------------------------------------------------------------------------------------
# The catalog itself (no network)


def test_catalog_is_well_formed():
    assert {"lcs558k", "mix665k"} <= set(CATALOG)
    assert sum(name.startswith("eval_") for name in CATALOG) >= 9
    for name, ds in CATALOG.items():
        assert ds.name == name and ds.files, name
        assert all(dep in CATALOG for dep in ds.depends_on)
        for f in ds.files:
            assert f.url is None and f.note or f.url.startswith(("https://", "http://")), f
            check_relative(f.dest, f.name)
            assert not Path(f.dest).is_absolute() and ".." not in Path(f.dest).parts
            if f.is_archive:
                assert ".." not in Path(f.extract_to).parts
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256)
            assert f.license, f


def test_catalog_has_the_real_sources():
    urls = {f.url for ds in CATALOG.values() for f in ds.files}
    assert "http://images.cocodataset.org/zips/train2017.zip" in urls
    assert ("https://huggingface.co/datasets/liuhaotian/LLaVA-Pretrain/resolve/main/blip_laion_cc_sbu_558k.json"
            in urls)
    assert CATALOG["mix665k"].file("ocr_vqa").kind == "url_list"
    assert CATALOG["eval_mme"].files[0].url is None and "request" in CATALOG["eval_mme"].files[0].note
    assert len(CATALOG["eval_pope"].files) == 4


def test_catalog_rejects_bad_entries():
    with pytest.raises(ValueError, match="relative"):
        SourceFile("x", "https://e.org/x", "../x")
    with pytest.raises(ValueError, match="note"):
        SourceFile("x", None, "x")
    with pytest.raises(ValueError, match="http"):
        SourceFile("x", "ftp://e.org/x", "x")
    with pytest.raises(ValueError, match="extract_to"):
        SourceFile("x", "https://e.org/x.zip", "x.zip", kind="zip")


def test_with_dependencies_lists_shared_image_sources_first():
    from components.data.catalog import with_dependencies

    assert with_dependencies(["eval_gqa", "eval_textvqa", "lcs558k"]) == ["mix665k", "eval_gqa", "eval_textvqa",
                                                                            "lcs558k"]
    with pytest.raises(KeyError, match="unknown dataset"):
        with_dependencies(["nope"])


def test_real_catalog_offline_names_the_hosts_and_suggests_synthetic(tmp_path, monkeypatch):
    """The real lcs558k entry with DNS failing: no socket is opened, the error names huggingface.co."""
    import socket
    import urllib.error
    import urllib.request

    def no_dns(self, request, *args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", no_dns)
    with pytest.raises(NetworkUnreachableError, match=r"huggingface\.co: DNS lookup failed") as info:
        download_dataset("lcs558k", tmp_path, **FAST)
    assert "data.source: synthetic" in str(info.value)
    assert manifest(tmp_path, "lcs558k")["images.zip"]["status"] == "missing"
