"""The layouts stage's table: every input row comes out, bad files as error rows, output deterministic."""

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.slicing.runner import write_layouts
from components.slicing.strategies import plan_layout
from components.slicing.table import LAYOUT_SCHEMA

GOOD = {"wide.jpg": (1200, 300), "tall.png": (90, 700), "square.jpg": (1000, 1000), "tiny.png": (1, 1)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for name, size in GOOD.items():
        Image.new("RGB", size, (90, 120, 200)).save(root / name)
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.new("RGB", (400, 100)).save(root / "rotated.jpg", exif=exif)  # displayed as 100x400
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 1200, 3), dtype=np.uint8))
    full = root / "noisy.jpg"
    noisy.save(full)
    (root / "truncated.jpg").write_bytes(full.read_bytes()[:2000])  # header intact, body cut
    noisy.save(root / "noisy.png")
    (root / "truncated.png").write_bytes((root / "noisy.png").read_bytes()[:2000])
    paths = [*GOOD, "rotated.jpg", "empty.jpg", "text.jpg", "truncated.jpg", "truncated.png", "missing.jpg"]
    table = root / "images.parquet"
    pq.write_table(pa.table({"path": paths}), table)
    return root, table, paths


def run(corpus, tmp_path, name="out.parquet", **kw):
    root, table, _ = corpus
    out = tmp_path / name
    summary = write_layouts(table, root, out, kw.pop("strategy", "uhd"), kw.pop("preset", "uhd-eccv"),
                            batch_rows=kw.pop("batch_rows", 3), progress=False, **kw)
    return summary, pq.read_table(out)


def test_every_row_is_kept_and_counts_reconcile(corpus, tmp_path):
    summary, table = run(corpus, tmp_path, workers=1)
    _, _, paths = corpus
    assert table.schema.equals(LAYOUT_SCHEMA)
    assert table.column("path").to_pylist() == paths  # input order, nothing dropped
    rows = {r["path"]: r for r in table.to_pylist()}
    for name, size in GOOD.items():
        expected = plan_layout(*size, "uhd", "uhd-eccv")
        assert rows[name]["error"] is None
        assert (rows[name]["width"], rows[name]["height"]) == size
        assert rows[name]["num_tokens"] == expected.num_tokens
        assert [tuple(s) for s in rows[name]["slice_sizes"]] == list(expected.slices)
    assert (rows["rotated.jpg"]["width"], rows["rotated.jpg"]["height"]) == (100, 400)
    assert rows["rotated.jpg"]["orientation"] == 8
    for bad in ("empty.jpg", "text.jpg", "missing.jpg"):
        assert rows[bad]["error"], bad
        assert rows[bad]["num_tokens"] is None
    assert "FileNotFoundError" in rows["missing.jpg"]["error"]
    metrics = summary.metrics()
    assert metrics["images"] == len(paths) == metrics["laid_out"] + metrics["errors"]
    assert metrics["tokens"]["max"] == max(r["num_tokens"] for r in rows.values() if r["num_tokens"])


def test_header_only_never_decodes_a_truncated_body(corpus, tmp_path):
    """A JPEG or PNG cut after its header still has a readable size: the stage never decodes pixels
    (PIL's PNG EXIF lookup would decode the whole image; headers.exif_orientation avoids it)."""
    _, table = run(corpus, tmp_path, workers=1)
    for name in ("truncated.jpg", "truncated.png"):
        row = next(r for r in table.to_pylist() if r["path"] == name)
        assert row["error"] is None and (row["width"], row["height"]) == (1200, 300), row


def test_output_is_identical_whatever_the_parallelism(corpus, tmp_path):
    run(corpus, tmp_path, "a.parquet", workers=1)
    run(corpus, tmp_path, "b.parquet", workers=2, batch_rows=2)
    run(corpus, tmp_path, "c.parquet", workers=2, batch_rows=2)  # idempotent re-run
    a, b, c = (pq.read_table(tmp_path / n) for n in ("a.parquet", "b.parquet", "c.parquet"))
    assert a.equals(b) and b.equals(c)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "b.parquet") == digest(tmp_path / "c.parquet")
    assert not list(tmp_path.glob("*.tmp"))


def test_known_sizes_are_trusted_without_touching_files(tmp_path):
    table = tmp_path / "known.parquet"
    sizes = np.array([[640, 480], [4032, 3024], [1, 20000]], dtype=np.int32)
    pq.write_table(pa.table({"path": ["nope/a.jpg", "nope/b.jpg", "nope/c.jpg"],
                             "width": sizes[:, 0], "height": sizes[:, 1]}), table)
    write_layouts(table, tmp_path / "nope", tmp_path / "out.parquet", "anyres", "onevision", progress=False)
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["error"] for r in out] == [None] * 3
    assert [r["num_tokens"] for r in out] == [plan_layout(w, h, "anyres", "onevision").num_tokens for w, h in sizes]


def test_table_without_path_column_is_a_clear_error(tmp_path):
    pq.write_table(pa.table({"file": ["a.jpg"]}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="'path' column"):
        write_layouts(tmp_path / "t.parquet", tmp_path, tmp_path / "o.parquet", "uhd", "uhd-eccv", progress=False)


@pytest.mark.parametrize("name", ["wide.jpg", "tall.png", "rotated.jpg", "noisy.png"])
def test_read_header_never_loads_pixels(corpus, monkeypatch, name):
    """Any pixel decode inside read_header is a failure here (PNG's getexif() would decode everything)."""
    from PIL import ImageFile

    from components.slicing.headers import read_header

    class Decoded(BaseException):  # not an Exception: no handler inside read_header may swallow it
        pass

    def refuse(self):
        raise Decoded("read_header decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    for module in ("PngImagePlugin", "JpegImagePlugin"):
        plugin = __import__(f"PIL.{module}", fromlist=["x"])
        cls = getattr(plugin, module.replace("ImagePlugin", "ImageFile"))
        if "load" in cls.__dict__:
            monkeypatch.setattr(cls, "load", refuse)
    root, _, _ = corpus
    header = read_header(root / name)
    assert header.width > 0 and header.height > 0
