"""Validate-stage throughput: annotation rows/s on a 665K-row conversation file, image checks/s.

What:
  (a) `validate_annotations` end to end on a generated 665K-row LLaVA-mix-like file (parse, vectorised checks,
      image headers, routing, Parquet writes, the Great Expectations suites, reports) -> rows/s, with the
      stage's default parallelism (parse in a child process, image pool, GX in a child process) and fully
      in one process (workers=1);
  (b) the image checks of the stage (`check_images`: read_header with EXIF orientation, size, pixel limit,
      mode) on the photo-like corpus of benchmarks/corpus.py, one core, in-process -> images/s; and the
      same with a full decode (pixels.load_image) of a seeded 1% and 10% sample;
and, as a baseline measured in the same run, plain `json.load` of the whole file in a child process
(the first step of a naive validator: no check done yet), with its peak memory.

Why: the stage must keep up with paper-scale data (LCS-558K + the 665K mix) on a laptop. Targets:
(a) >= 50,000 rows/s; (b) headers only >= 5,000 images/s on one core.

The annotation file (~1 GB, cached in --dir with the parameters in its name): 665K samples, ~5% text-only
(ShareGPT-like long multi-turn), the rest VQA-style multi-turn with short answers, LLaVA-Instruct-style
conversations and detailed descriptions, captions; `<image>` first (80%) or last in the first human turn;
~6% of samples with non-ASCII text; ~1.5 KB per sample as in the real file; 22 bad rows of every
annotation-level reason. Images: the 2,000-file corpus of benchmarks/corpus.py (mean 1.5 MP), referenced
at random, so the images are a small part of (a); (b) measures them on their own.

Run from the repository root:
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.validation_throughput
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.corpus import ensure_corpus
from components.data.validation import check_images, full_decode_sample, supported_modes, validate_annotations

ROWS_TARGET = 50_000.0
HEADER_TARGET = 5_000.0
# kind: (share, pairs low, pairs high (inclusive), human chars, gpt chars)
KINDS = {
    "vqa": (0.50, 1, 30, (25, 90), (1, 25)),  # VQAv2 / GQA / OCR-VQA / VG: many short Q&A per image
    "conversation": (0.10, 1, 6, (30, 150), (80, 700)),  # LLaVA-Instruct conversations
    "detail": (0.20, 1, 1, (30, 100), (250, 1400)),  # detailed descriptions, complex reasoning
    "caption": (0.15, 1, 3, (40, 120), (40, 200)),  # TextCaps, RefCOCO
    "text": (0.05, 1, 8, (40, 1200), (200, 2500)),  # ShareGPT: text-only
}
VQA_SUFFIX = "\nAnswer the question using a single word or phrase."
NON_ASCII = " \u2013 \u201ccaf\u00e9\u201d 10\u00b0C"
BAD_MARK = "@@BAD_BYTES@@"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=665_000, help="annotation rows")
    parser.add_argument("--images", type=int, default=2000, help="image corpus size")
    parser.add_argument("--corpus-dir", default="/tmp/uhd-bench-corpus", help="image corpus cache")
    parser.add_argument("--dir", default="/tmp/uhd-bench-validation", help="annotation file cache")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs of (a) with defaults")
    parser.add_argument("--skip-baseline", action="store_true", help="skip json.load (10-20 s, ~5 GB RAM)")
    parser.add_argument("--skip-sequential", action="store_true", help="skip (a) with workers=1")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------
# The annotation file


def generate_annotations(path: Path, rows: int, image_paths: list[str], seed: int) -> dict:
    """Write the benchmark's LLaVA-mix-like file (see the module doc); return its bad rows by reason."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    lexicon = ["".join(map(chr, rng.choice(letters, size=k))) for k in rng.integers(2, 10, 3000)]
    text = " ".join(rng.choice(lexicon, size=600_000))
    names = list(KINDS)
    kinds = rng.choice(len(names), size=rows, p=[KINDS[k][0] for k in names])
    low = np.array([KINDS[k][1] for k in names])[kinds]
    high = np.array([KINDS[k][2] for k in names])[kinds]
    pairs = np.where(kinds == names.index("vqa"), np.minimum(1 + rng.geometric(0.22, rows), 30),
                     rng.integers(low, high + 1))
    n_turns = int(2 * pairs.sum())
    uniform = rng.random(n_turns)
    offsets = rng.integers(0, len(text) - 3000, n_turns)
    image_choice = rng.integers(0, len(image_paths), rows)
    token_last = rng.random(rows) < 0.2
    non_ascii = rng.random(rows) < 0.06
    bad = {reason: sorted(rng.choice(rows, 2, replace=False).tolist()) for reason in (
        "missing_image_token", "multiple_image_tokens", "unexpected_image_token", "bad_roles", "empty_turn",
        "duplicate_id", "unsafe_path", "malformed", "non_utf8", "image_missing", "text_only_token")}
    bad_rows = {row: reason for reason, rs in bad.items() for row in rs}
    lengths = {k: (KINDS[k][3], KINDS[k][4]) for k in names}
    turn = 0
    with open(path, "wb") as fh:
        fh.write(b"[\n")
        for i in range(rows):
            kind = names[kinds[i]]
            (h_lo, h_hi), (g_lo, g_hi) = lengths[kind]
            conversations = []
            for j in range(2 * int(pairs[i])):
                lo, hi = (h_lo, h_hi) if j % 2 == 0 else (g_lo, g_hi)
                size = lo + int(uniform[turn] * (hi - lo))
                value = text[offsets[turn]:offsets[turn] + size].strip() or "yes"
                turn += 1
                if j % 2 == 0 and kind == "vqa":
                    value += VQA_SUFFIX
                if j == 0 and kind != "text":
                    value = f"{value}\n<image>" if token_last[i] else f"<image>\n{value}"
                conversations.append({"from": "gpt" if j % 2 else "human", "value": value})
            if non_ascii[i]:
                conversations[-1]["value"] += NON_ASCII
            sample = {"id": f"{i:012d}"}
            if kind != "text":
                sample["image"] = image_paths[image_choice[i]]
            sample["conversations"] = conversations
            _spoil(sample, bad_rows.get(i))
            data = json.dumps(sample, ensure_ascii=False).encode()
            fh.write(data.replace(BAD_MARK.encode(), b"caf\xe9") + (b",\n" if i + 1 < rows else b"\n]\n"))
    return bad


def _spoil(sample: dict, reason: str | None) -> None:
    conversations = sample["conversations"]
    first = conversations[0]
    if reason is None:
        return
    if reason == "missing_image_token":
        sample.setdefault("image", "00/000000.jpg")
        first["value"] = first["value"].replace("<image>", "")
    elif reason == "multiple_image_tokens":
        sample.setdefault("image", "00/000000.jpg")
        first["value"] = first["value"].replace("<image>", "") + "\n<image>\n<image>"
    elif reason in ("unexpected_image_token", "text_only_token"):
        conversations[-1]["value"] += " <image>"
    elif reason == "bad_roles":
        first["from"] = "user"
    elif reason == "empty_turn":
        conversations[-1]["value"] = "  "
    elif reason == "duplicate_id":
        sample["id"] = "000000000000"
    elif reason == "unsafe_path":
        sample["image"] = "../../etc/passwd"
    elif reason == "malformed":
        conversations.pop()
    elif reason == "non_utf8":
        conversations[-1]["value"] += BAD_MARK
    elif reason == "image_missing":
        sample["image"] = "00/no_such_file.jpg"


def ensure_annotations(directory: Path, rows: int, image_paths: list[str], seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"mix_{rows}_s{seed}_v1.json"
    if not path.exists():
        print(f"generating {rows} annotation rows in {path} ...", flush=True)
        start = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        generate_annotations(tmp, rows, image_paths, seed)
        os.replace(tmp, path)
        print(f"generated in {time.perf_counter() - start:.0f} s ({path.stat().st_size / 1e9:.2f} GB)", flush=True)
    return path


# ---------------------------------------------------------------------------------------------------
# Measurements


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_validation(annotations: Path, image_root: Path, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="uhd-bench-validate-") as out:
        cpu, start = cpu_seconds(), time.perf_counter()
        report = validate_annotations(annotations, image_root, out, dataset_name="bench", workers=workers,
                                      progress=False)
        wall = time.perf_counter() - start
        return {"wall_s": wall, "cpu_s": cpu_seconds() - cpu, "rows": report.rows_in, "valid": report.valid,
                "quarantined": report.quarantined, "timings": report.timings,
                "reasons": {k: v for k, v in report.reasons.items() if v}}


def json_load_baseline(annotations: Path) -> dict:
    """json.load of the whole file in a child process: seconds and peak RSS."""
    code = ("import json, resource, sys, time\nt = time.perf_counter()\n"
            f"data = json.load(open({str(annotations)!r}, encoding='utf-8', errors='surrogateescape'))\n"
            "s = time.perf_counter() - t\n"
            "print(json.dumps({'s': s, 'rows': len(data), "
            "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_image_checks(paths: list[str], root: Path, fraction: float, seed: int, repeats: int) -> float:
    sampled = full_decode_sample(paths, fraction, seed).tolist()
    modes = supported_modes()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        check_images(paths, sampled, image_root=str(root), max_pixels=89_478_485, modes=modes)
        best = min(best, time.perf_counter() - start)
    return best


def warm_page_cache(root: Path, paths: list[str]) -> None:
    for path in paths:
        with open(root / path, "rb") as f:
            while f.read(1 << 22):
                pass


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


# ---------------------------------------------------------------------------------------------------
# Report


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def main(argv=None) -> dict:
    args = parse_args(argv)
    corpus = ensure_corpus(args.corpus_dir, args.images, args.seed)
    image_paths = pq.read_table(corpus.table, columns=["path"]).column("path").to_pylist()
    annotations = ensure_annotations(Path(args.dir), args.rows, image_paths, args.seed)
    load_before = load_average()
    warm_page_cache(corpus.root, image_paths)
    with open(annotations, "rb") as f:
        while f.read(1 << 24):
            pass

    runs = [run_validation(annotations, corpus.root, workers=0) for _ in range(max(1, args.repeats))]
    best = min(runs, key=lambda r: r["wall_s"])
    sequential = None if args.skip_sequential else run_validation(annotations, corpus.root, workers=1)
    peak_mb = {"main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    baseline = None if args.skip_baseline else json_load_baseline(annotations)

    n = len(image_paths)
    time_image_checks(image_paths[:200], corpus.root, 0.0, args.seed, 1)  # warm-up (imports, caches)
    image_times = {f: time_image_checks(image_paths, corpus.root, f, args.seed, 3 if f == 0 else 1)
                   for f in (0.0, 0.01, 0.1)}
    decoded = {f: int(full_decode_sample(image_paths, f, args.seed).sum()) for f in image_times}
    load_after = load_average()

    rows = best["rows"]
    rows_per_s = rows / best["wall_s"]
    size_gb = annotations.stat().st_size / 1e9
    print(f"\nvalidation throughput: {rows:,} annotation rows ({size_gb:.2f} GB, {rows - best['valid']} quarantined), "
          f"{n} images; {os.cpu_count()} cores; load average {load_before} before, {load_after} after\n")
    print(f"{'measurement':<62}{'items':>10}{'wall s':>9}{'cpu s':>8}{'items/s':>11}")

    def line(label, items, wall, cpu=None):
        cpu_text = f"{cpu:>8.1f}" if cpu is not None else f"{'':>8}"
        print(f"{label:<62}{items:>10,}{wall:>9.2f}{cpu_text}{items / wall:>11,.0f}")

    line(f"(a) validate_annotations, default workers (best of {len(runs)})", rows, best["wall_s"], best["cpu_s"])
    timings = best["timings"]
    print(f"{'':<6}stream (parse+checks+images+writes) {timings['stream_s']:.2f} s, GX suites "
          f"{timings['gx_s']:.2f} s, total {timings['total_s']:.2f} s; all runs: "
          + ", ".join(f"{rows / r['wall_s']:,.0f}" for r in runs) + " rows/s")
    print(f"{'':<6}peak RSS: this process {peak_mb['main']:,.0f} MB, largest child {peak_mb['largest_child']:,.0f} MB")
    if sequential:
        line("(a) validate_annotations, workers=1 (one process)", rows, sequential["wall_s"], sequential["cpu_s"])
    if baseline:
        line(f"baseline: json.load of the file only (peak {baseline['rss_mb']:,.0f} MB)", rows, baseline["s"])
    for fraction, seconds in image_times.items():
        label = "(b) check_images, headers only, one core" if fraction == 0 else (
            f"(b) check_images + full decode of {fraction:.0%} ({decoded[fraction]} images)")
        line(label, n, seconds)
    header_rate = n / image_times[0.0]
    print(f"\n(a) {rows_per_s:,.0f} rows/s   target >= {ROWS_TARGET:,.0f}: {verdict(rows_per_s >= ROWS_TARGET)}")
    print(f"(b) {header_rate:,.0f} images/s   target >= {HEADER_TARGET:,.0f}: {verdict(header_rate >= HEADER_TARGET)}")
    figures = {
        "benchmark": "validation_throughput",
        "rows": rows,
        "file_gb": round(size_gb, 3),
        "quarantined": best["quarantined"],
        "rows_per_s": round(rows_per_s, 1),
        "rows_per_s_runs": [round(rows / r["wall_s"], 1) for r in runs],
        "wall_s": round(best["wall_s"], 2),
        "cpu_s": round(best["cpu_s"], 2),
        "stream_s": round(timings["stream_s"], 2),
        "gx_s": round(timings["gx_s"], 2),
        "rows_per_s_workers1": round(rows / sequential["wall_s"], 1) if sequential else None,
        "json_load_baseline_s": round(baseline["s"], 2) if baseline else None,
        "json_load_baseline_rss_mb": round(baseline["rss_mb"]) if baseline else None,
        "peak_rss_mb": {k: round(v) for k, v in peak_mb.items()},
        "images": n,
        "header_images_per_s": round(header_rate, 1),
        "full_decode_images_per_s": {str(f): round(n / s, 1) for f, s in image_times.items()},
        "full_decode_sample_size": {str(f): decoded[f] for f in image_times},
        "rows_target_met": rows_per_s >= ROWS_TARGET,
        "header_target_met": header_rate >= HEADER_TARGET,
        "cores": os.cpu_count(),
        "load_average": [load_before, load_after],
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
