import json
import subprocess
import sys

from PIL import Image

from cli.main import main


def test_uhd_layout_prints_the_plan_and_writes_an_overlay(tmp_path, capsys):
    image = tmp_path / "photo.jpg"
    Image.new("RGB", (1920, 1080), (30, 90, 160)).save(image)
    out = tmp_path / "overlay.png"
    assert main(["layout", str(image), "--preset", "uhd-eccv", "--out", str(out), "--json"]) == 0
    text = capsys.readouterr().out
    assert "grid 3x2" in text and "visual tokens 1014" in text
    record = json.loads(next(line for line in text.splitlines() if line.startswith("{")))
    assert record["num_tokens"] == 1014 and record["slice_sizes"] == [[364, 308]] * 6
    overlay = Image.open(out)
    assert overlay.size == (1600, 900)  # downscaled for viewing, aspect kept
    # the grid is drawn: the vertical line between the first two columns is red
    assert overlay.getpixel((533, 450))[0] > 200


def test_uhd_layout_compressor_switch_and_anyres(tmp_path, capsys):
    image = tmp_path / "wide.png"
    Image.new("RGB", (2000, 50)).save(image)
    assert main(["layout", str(image), "--compressor", "mlp", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["layout", str(image), "--strategy", "anyres", "--out", str(tmp_path / "b.png")]) == 0
    text = capsys.readouterr().out
    assert "anyres/onevision" in text and "1544 visual tokens" in text


def test_uhd_layout_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["layout", str(tmp_path / "nope.jpg")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_uhd_layout_bad_files_are_one_line_and_exit_2(tmp_path, capsys):
    """The audit's cases (#13): no traceback, one line naming the file and the reason."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))  # claims 60000x60000
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                                        + chunk(b"IEND", b""))
    Image.effect_noise((320, 240), 64).convert("RGB").save(tmp_path / "whole.jpg")
    whole = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "outdir").mkdir()
    cases = [(["zero.jpg"], "empty file"), (["text.jpg"], "not an image"), (["huge.png"], "pixels"),
             (["trunc.jpg"], "does not decode"), (["whole.jpg", "--out", str(tmp_path / "outdir")], "is a directory")]
    for args, message in cases:
        capsys.readouterr()
        assert main(["layout", str(tmp_path / args[0]), *args[1:]]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("uhd layout: "), err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "cli.main", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "layout" in result.stdout


def test_uhd_data_validate_contract(tmp_path):
    """`uhd data validate --annotations FILE --image-root DIR --out DIR` writes valid + quarantine tables."""
    import pyarrow.parquet as pq

    Image.new("RGB", (640, 480)).save(tmp_path / "a.jpg")
    samples = [
        {"id": "1", "image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\nHi"},
                                                         {"from": "gpt", "value": "Hello"}]},
        {"id": "2", "image": "missing.jpg", "conversations": [{"from": "human", "value": "<image>\nHi"},
                                                               {"from": "gpt", "value": "Hello"}]},
    ]
    (tmp_path / "ann.json").write_text(json.dumps(samples))
    out = tmp_path / "out"
    code = main(["data", "validate", "--annotations", str(tmp_path / "ann.json"), "--image-root", str(tmp_path),
                 "--out", str(out), "--workers", "1", "--quiet", "--max-quarantine-fraction", "0.2"])
    assert code == 1  # half the rows quarantined: above the default limit, files still written
    assert pq.read_table(out / "valid.parquet").column("id").to_pylist() == ["1"]
    quarantine = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert [(r["id"], r["reason"]) for r in quarantine] == [("2", "image_missing")]
