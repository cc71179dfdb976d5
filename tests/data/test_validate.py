"""The validate stage: every bad input ends in quarantine with its own reason, unusual-but-valid images stay
valid with the right size, counts reconcile, Great Expectations drives the verdict, and the CLI contract holds.
The corpus is generated in code (tests/data/bad_inputs.py); nothing touches a network."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import components.data.validation as validation
from components.data.llava_format import AnnotationFormatError, iter_json_values, iter_sample_chunks, read_spans
from components.data.validation import (
    REASONS,
    ValidationEngineError,
    full_decode_sample,
    image_token_counts,
    normalize_image_path,
    supported_modes,
    validate_annotations,
)
from tests.data.bad_inputs import Case, build_corpus, patch_png_size


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("bad_inputs"))


def run(corpus, out: Path, **kw):
    annotations, image_root, _ = corpus
    kw.setdefault("workers", 1)
    report = validate_annotations(annotations, image_root, out, dataset_name="bad", progress=False, **kw)
    tables = {name: pq.read_table(out / name) for name in validation.OUTPUT_FILES}
    return report, tables


@pytest.fixture(scope="module")
def headers_only(corpus, tmp_path_factory):
    return run(corpus, tmp_path_factory.mktemp("headers_only"), full_decode_fraction=0.0)


def expected(cases: list[Case], truncated_decoded: bool = False) -> dict[int, set[str]]:
    out = {}
    for row, case in enumerate(cases):
        out[row] = set(case.reasons)
        if case.name == "truncated" and truncated_decoded:
            out[row] = {"image_truncated"}
    return out


def outcome(tables) -> dict[int, set[str]]:
    got = {row: set() for row in tables["valid.parquet"].column("row").to_pylist()}
    quarantine = tables["quarantine.parquet"].to_pylist()
    got.update({r["row"]: set(r["reasons"]) for r in quarantine})
    return got


def check_reconciles(report, tables, n_rows: int) -> None:
    m = report.metrics
    assert m["rows_in"] == n_rows == m["valid"] + m["quarantined"]
    assert tables["valid.parquet"].num_rows == m["valid"] and tables["quarantine.parquet"].num_rows == m["quarantined"]
    rows = sorted(tables["valid.parquet"].column("row").to_pylist()
                  + tables["quarantine.parquet"].column("row").to_pylist())
    assert rows == list(range(n_rows))  # nothing lost, nothing twice
    reasons = tables["quarantine.parquet"].column("reasons").to_pylist()
    assert m["reasons"] == {code: sum(code in r for r in reasons) for code in REASONS}
    assert sum(m["primary_reasons"].values()) == m["quarantined"]


def test_every_case_ends_with_its_own_reason(corpus, headers_only):
    _, _, cases = corpus
    report, tables = headers_only
    got, want = outcome(tables), expected(cases)
    wrong = {cases[row].name: (got.get(row), reasons) for row, reasons in want.items() if got.get(row) != reasons}
    assert not wrong, wrong
    check_reconciles(report, tables, len(cases))


def test_quarantine_rows_keep_reason_detail_and_exact_source_bytes(corpus, headers_only):
    annotations, _, cases = corpus
    _, tables = headers_only
    quarantine = {r["row"]: r for r in tables["quarantine.parquet"].to_pylist()}
    assert {"reason", "reasons", "detail", "raw_json", "raw"} <= set(tables["quarantine.parquet"].column_names)
    for row, r in quarantine.items():
        assert r["reason"] == r["reasons"][0] and r["detail"], cases[row].name
        order = list(REASONS)
        assert r["reasons"] == sorted(r["reasons"], key=order.index)  # primary = highest priority
    raw = annotations.read_bytes()
    non_utf8 = next(r for r in quarantine.values() if r["id"] == "non_utf8")
    assert b"\xe9\xff" in non_utf8["raw"] and non_utf8["raw"] in raw  # the exact bytes, undecodable ones too
    assert "\\xe9\\xff" in non_utf8["raw_json"]
    not_object = next(r for r in quarantine.values() if cases[r["row"]].name == "not_an_object")
    assert json.loads(not_object["raw"]) == "just a string" and not_object["id"] is None
    bomb = next(r for r in quarantine.values() if r["id"] == "bomb_50000x50000")
    assert "50000x50000" in bomb["detail"]


def test_valid_rows_and_image_table_carry_displayed_sizes(corpus, headers_only):
    _, _, cases = corpus
    _, tables = headers_only
    valid = {r["row"]: r for r in tables["valid.parquet"].to_pylist()}
    for row, case in enumerate(cases):
        if case.reasons:
            continue
        r = valid[row]
        assert r["id"] == str(case.sample["id"]) and r["n_turns"] == len(case.sample["conversations"])
        assert [t["value"] for t in r["conversations"]] == [t["value"] for t in case.sample["conversations"]]
        assert (r["width"], r["height"]) == (case.size or (None, None)), case.name
    assert valid[5]["image"] == "good.jpg"  # ./sub/../good.jpg, normalised
    images = {r["path"]: r for r in tables["images.parquet"].to_pylist()}
    assert (images["rotated.jpg"]["width"], images["rotated.jpg"]["height"]) == (100, 400)  # EXIF 6: swapped
    assert images["rotated.jpg"]["orientation"] == 6
    assert (images["tall.png"]["width"], images["tall.png"]["height"]) == (1, 20000)
    assert {images[p]["mode"] for p in ("cmyk.jpg", "grey16.png", "palette_t.png", "la.png", "one_bit.png")} == {
        "CMYK", "I;16", "P", "LA", "1"}
    assert "outside.jpg" not in images and all(not p.startswith(("/", "..")) for p in images)
    assert tables["images.parquet"].column("full_decode").null_count == len(images)  # fraction 0: none decoded
    bad = {r["path"]: r["reason"] for r in tables["bad_images.parquet"].to_pylist()}
    assert bad == {"missing.jpg": "image_missing", "empty.jpg": "image_unreadable", "text.jpg": "image_unreadable",
                   "bomb.png": "image_too_large", "wide.png": "image_bad_size"}


def test_full_decode_catches_the_truncated_file(corpus, tmp_path):
    _, _, cases = corpus
    report, tables = run(corpus, tmp_path, full_decode_fraction=1.0)
    assert outcome(tables) == expected(cases, truncated_decoded=True)
    images = report.metrics["images"]
    decodable = 11  # every image with a readable, sane header (the truncated one included)
    assert images["full_decode_sampled"] == images["referenced"] == 16
    assert images["full_decode_checked"] == decodable and images["full_decode_failed"] == 1
    assert tables["images.parquet"].column("full_decode").to_pylist() == [True] * 10  # CMYK, I;16, P+tRNS ... decode
    check_reconciles(report, tables, len(cases))


def test_unsupported_mode_is_quarantined(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(validation.rules, "supported_modes", lambda: frozenset(supported_modes() - {"CMYK"}))
    _, tables = run(corpus, tmp_path)
    cmyk = next(r for r in tables["quarantine.parquet"].to_pylist() if r["id"] == "cmyk")
    assert cmyk["reasons"] == ["image_bad_mode"] and "mode CMYK" in cmyk["detail"]


def test_modes_follow_the_training_decoder():
    modes = supported_modes()
    assert {"RGB", "RGBA", "L", "1", "P", "PA", "LA", "CMYK", "I;16", "I", "F", "YCbCr"} <= modes
    assert "La" not in modes  # pixels.to_rgb cannot convert it


def test_great_expectations_reports_each_failing_expectation(corpus, headers_only):
    _, _, cases = corpus
    report, _ = headers_only
    gx = json.loads(Path(report.outputs["gx_report.json"]).read_text())
    by_rule = {e["rule"]: e for suite in gx["summary"].values() for e in suite["expectations"]}
    bad_roles = sum("bad_roles" in c.reasons for c in cases)
    assert not by_rule["roles_alternate"]["success"]
    assert by_rule["roles_alternate"]["unexpected_count"] == bad_roles == report.metrics["reasons"]["bad_roles"]
    assert by_rule["roles_alternate"]["type"] == "expect_column_values_to_be_in_set"
    assert by_rule["unique_id"]["unexpected_count"] == 2  # GX lists both rows of "dup"; the first stays valid
    assert by_rule["image_pixels"]["unexpected_count"] == 1 and by_rule["image_width"]["unexpected_count"] == 1
    assert by_rule["image_decodes"]["success"]  # nothing sampled, nothing failed
    suites = gx["great_expectations"]
    assert suites["annotations"]["statistics"]["evaluated_expectations"] == len(validation.ANNOTATION_RULES)
    assert report.metrics["gx"]["annotations"] == {"success": False, "evaluated": 9, "failed": 9}
    page = Path(report.outputs["gx_report.html"]).read_text()
    assert "FAIL" in page and "PASS" in page and "expect_column_values_to_be_between" in page


@pytest.mark.parametrize("tamper", ["drop", "add"])
def test_disagreeing_with_great_expectations_fails_loudly_and_publishes_nothing(corpus, tmp_path, monkeypatch,
                                                                                  tamper):
    real = validation.evaluate_with_gx

    def tampered(tables, dataset):
        payload = real(tables, dataset)
        rows = payload["annotations"]["unexpected"]["roles_alternate"]
        if tamper == "drop":
            rows.pop()
        else:
            rows.append(0)  # GX claims a valid row breaks the roles rule
        return payload

    monkeypatch.setattr(validation.suites, "evaluate_with_gx", tampered)
    with pytest.raises(ValidationEngineError, match="bad_roles"):
        run(corpus, tmp_path)
    assert not any(tmp_path.iterdir())  # no table, no temporary file left behind


def test_parallel_run_gives_the_same_tables(corpus, headers_only, tmp_path):
    """workers=2: parsing in a child process, images in a pool, GX in a child; chunks of 5 rows put
    duplicates and images in different chunks."""
    _, tables = run(corpus, tmp_path, workers=2, chunk_rows=5, image_batch=3)
    for name, table in headers_only[1].items():
        assert tables[name].equals(table), name


def test_empty_list_validates_to_empty_tables(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "empty.json").write_text("[]")
    report = validate_annotations(tmp_path / "empty.json", tmp_path / "images", tmp_path / "out",
                                  dataset_name="empty", workers=1, progress=False)
    assert (report.rows_in, report.valid, report.quarantined) == (0, 0, 0)
    assert pq.read_table(tmp_path / "out" / "valid.parquet").num_rows == 0
    assert report.metrics["gx"]["annotations"]["success"]


def test_symbolic_links_out_of_the_image_root_are_unsafe(tmp_path):
    """Paths are checked as text first (../, /abs); a link inside the root can still lead out: it is resolved and
    quarantined as unsafe_path, and what it points at is never read (#13)."""
    from PIL import Image

    root, outside = tmp_path / "images", tmp_path / "outside"
    (root / "ok").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (8, 6)).save(outside / "secret.jpg")
    Image.new("RGB", (8, 6)).save(root / "ok" / "real.jpg")
    os.symlink(outside / "secret.jpg", root / "link.jpg")  # a file link out of the root
    os.symlink(outside, root / "linkdir")  # a folder link out of the root
    os.symlink(root / "ok" / "real.jpg", root / "inner.jpg")  # a link that stays inside is fine
    rows = [{"id": str(i), "image": path, "conversations": [{"from": "human", "value": "<image>\nQ"},
                                                            {"from": "gpt", "value": "A"}]}
            for i, path in enumerate(["link.jpg", "linkdir/secret.jpg", "inner.jpg", "ok/real.jpg"])]
    (tmp_path / "data.json").write_text(json.dumps(rows))
    report = validate_annotations(tmp_path / "data.json", root, tmp_path / "out", dataset_name="links", workers=1,
                                  progress=False, quarantine_dir=tmp_path / "quarantine")
    assert (report.rows_in, report.valid, report.quarantined) == (4, 2, 2)
    quarantined = pq.read_table(tmp_path / "quarantine" / "quarantine.parquet").to_pylist()
    assert {r["id"]: r["reason"] for r in quarantined} == {"0": "unsafe_path", "1": "unsafe_path"}
    assert all("outside the image root" in r["detail"] for r in quarantined)
    valid = pq.read_table(tmp_path / "out" / "images.parquet").column("path").to_pylist()
    assert sorted(valid) == ["inner.jpg", "ok/real.jpg"]
    assert report.metrics["images"]["by_reason"]["unsafe_path"] == 2


# ---------------------------------------------------------------------------------------------------
# The reader


def test_streaming_reader_matches_json_loads_whatever_the_read_size(corpus):
    annotations, _, cases = corpus
    raw = annotations.read_bytes()
    reference = json.loads(raw.decode("utf-8", "surrogateescape"))
    for read_bytes in (1, 7, 333, 1 << 20):
        got = list(iter_json_values(annotations, read_bytes))
        assert [g[0] for g in got][:5] == reference[:5] and len(got) == len(cases)
        for value, start, length, invalid in got:
            assert json.loads(raw[start:start + length].decode("utf-8", "surrogateescape")) == value
            span = raw[start:start + length]
            assert invalid == (b"\xe9\xff" in span or b"\xed\xa0\x80" in span)  # bytes that are not UTF-8
    spans = [(g[1], g[2]) for g in got]
    assert read_spans(annotations, spans[:2]) == [raw[s:s + n] for s, n in spans[:2]]


def test_chunks_have_exactly_chunk_rows(corpus):
    annotations, _, cases = corpus
    for chunk_rows in (1, 4, 1000):
        sizes = [c.n for c in iter_sample_chunks(annotations, chunk_rows=chunk_rows, read_bytes=97)]
        assert sum(sizes) == len(cases) and all(s == chunk_rows for s in sizes[:-1])


def test_json_lines_and_bom_are_read(tmp_path):
    samples = [{"id": str(i), "conversations": [{"from": "human", "value": "é"}, {"from": "gpt", "value": "x"}]}
               for i in range(3)]
    lines = tmp_path / "a.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + b"\n".join(json.dumps(s, ensure_ascii=False).encode() for s in samples))
    assert [v for v, *_ in iter_json_values(lines, read_bytes=5)] == samples


@pytest.mark.parametrize("text, where", [
    (b'[{"id": "a", "conversations": []},\n {"id": "b" "x": 1}]', "line 2, column 13"),
    (b'[{"id": "a"}', "unterminated"),
    (b'{"id": "a"} oops', "line 1, column 13"),
    (b'[{"id": "a"},]', "trailing comma"),
    (b"", "empty file"),
    (b"42", "expected a JSON list"),
])
def test_a_file_that_is_not_json_is_one_clear_error(tmp_path, text, where):
    path = tmp_path / "broken.json"
    path.write_bytes(text)
    with pytest.raises(AnnotationFormatError) as err:
        list(iter_json_values(path, read_bytes=4))
    assert str(path) in str(err.value) and where in str(err.value)


# ---------------------------------------------------------------------------------------------------
# Helpers


def test_image_paths_are_normalised_or_refused():
    assert normalize_image_path("coco/train2017/1.jpg") == "coco/train2017/1.jpg"
    assert normalize_image_path("./a/../b/./c.jpg") == "b/c.jpg"
    for unsafe in ("", "/etc/passwd", "../x.jpg", "a/../../x.jpg", "..", "C:\\x.jpg", "a\\..\\..\\x.jpg", "a\x00b"):
        assert normalize_image_path(unsafe) is None, unsafe


def test_image_token_counts_match_arrow():
    rng = np.random.default_rng(0)
    parts = ["<image>", "<ima", "ge>", "x", "é", "<image><image>", ""]
    values = pa.array(["".join(rng.choice(parts, size=rng.integers(0, 6))) for _ in range(500)])
    for array in (values, values.slice(7)):
        assert (image_token_counts(array) == pc.count_substring(array, "<image>").to_numpy()).all()


def test_full_decode_sample_is_seeded_and_order_free():
    paths = [f"{i:05d}.jpg" for i in range(4000)]
    sample = full_decode_sample(paths, 0.25, seed=3)
    assert 800 < sample.sum() < 1200
    assert (full_decode_sample(paths[::-1], 0.25, seed=3) == sample[::-1]).all()
    assert (full_decode_sample(paths, 0.25, seed=4) != sample).any()
    assert not full_decode_sample(paths, 0.0, 0).any() and full_decode_sample(paths, 1.0, 0).all()


def test_patched_png_header_is_consistent(tmp_path):
    from PIL import Image

    path = tmp_path / "p.png"
    Image.new("RGB", (4, 4)).save(path)
    data = patch_png_size(path.read_bytes(), 50000, 50000)
    assert struct.unpack(">II", data[16:24]) == (50000, 50000)
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29]) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------------
# The CLI contract (`python -m pipelines.validate`, run as a command: tests import components, not stages)

REPO = Path(__file__).resolve().parents[2]


def validate_main(argv: list[str]) -> int:
    """The exit code of the validate command; its stdout and stderr are echoed for capsys."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "pipelines.validate", *argv], capture_output=True, text=True,
                          env=env, cwd=REPO)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


def test_cli_writes_the_tables_and_exits_by_the_quarantine_limit(corpus, tmp_path, capsys):
    annotations, image_root, cases = corpus
    args = ["--annotations", str(annotations), "--image-root", str(image_root), "--quiet", "--workers", "1",
            "--params", str(tmp_path / "no-params.yaml")]
    assert validate_main([*args, "--out", str(tmp_path / "a"), "--max-quarantine-fraction", "1"]) == 0
    quarantine = pq.read_table(tmp_path / "a" / "quarantine.parquet")
    assert "reason" in quarantine.column_names
    valid = pq.read_table(tmp_path / "a" / "valid.parquet")
    assert valid.num_rows + quarantine.num_rows == len(cases)
    summary = json.loads(capsys.readouterr().out.split("\nvalidate:")[0])
    assert summary["rows_in"] == len(cases) and summary["dataset"] == "annotations"
    split = ["--out", str(tmp_path / "b"), "--quarantine", str(tmp_path / "q"), "--reports", str(tmp_path / "r")]
    assert validate_main([*args, *split]) == 1  # above ValidateConfig's default limit (no params file here)
    assert (tmp_path / "b" / "valid.parquet").exists()  # written all the same
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["images.parquet", "valid.parquet"]
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["bad_images.parquet", "quarantine.parquet"]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["gx_report.html", "gx_report.json", "metrics.json"]
    images = pq.read_table(tmp_path / "b" / "images.parquet")
    assert images.schema.metadata[b"image_root"] == str(image_root).encode()


def test_cli_refuses_unreadable_input_with_exit_code_2(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1,')
    common = ["--image-root", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--quiet"]
    assert validate_main(["--annotations", str(broken), *common]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert validate_main(["--annotations", str(tmp_path / "missing.json"), *common]) == 2
    assert not (tmp_path / "out" / "valid.parquet").exists()


def test_a_turn_without_value_drops_the_whole_row_cleanly(tmp_path):
    """A row whose third turn has no `value` must not leave its first two values behind (they would
    shift every following row's turns)."""
    turn = {"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}
    samples = [{"id": "a", "conversations": [*turn, {"from": "human"}, {"from": "gpt", "value": "b"}]},
               {"id": "b", "conversations": list(turn)}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(samples))
    chunk = next(iter_sample_chunks(path))
    assert chunk.problem == ["turn_not_an_object", None] and chunk.turn_value.to_pylist() == ["<image>\nq", "a"]
    assert chunk.conversations().to_pylist()[1] == list(turn)


def test_an_error_in_the_parsing_process_reaches_the_caller(tmp_path):
    (tmp_path / "images").mkdir()
    broken = tmp_path / "broken.json"
    rows = [json.dumps({"id": str(i), "conversations": [{"from": "human", "value": "hi"},
                                                        {"from": "gpt", "value": "yo"}]}) for i in range(50)]
    broken.write_text("[" + ",\n".join(rows) + ",\n{oops}]")
    with pytest.raises(AnnotationFormatError, match="line 51"):
        validate_annotations(broken, tmp_path / "images", tmp_path / "out", dataset_name="broken", workers=2,
                             chunk_rows=8, progress=False)
    assert not any((tmp_path / "out").iterdir())
