"""The embedded dataset: deterministic, in LLaVA's real formats, with the fine detail it promises."""

import base64
import csv
import hashlib
import io
import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.data.conversation import LETTER_ANSWER, SHORT_ANSWER
from components.data.synthetic import SyntheticSpec, build_synthetic, scene_questions
from components.data.synthetic_eval import FINE_DETAIL_PER_SCENE
from components.data.synthetic_images import (
    FINE_LINES_MIN_SIDE,
    FINE_LINES_QUESTION,
    LINES,
    line_period,
    render_scene,
)
from components.slicing.headers import read_header
from components.slicing.pixels import encode_image
from components.slicing.strategies import plan_layout

SPEC = SyntheticSpec(seed=3, train_scenes=12, eval_scenes=4, easy_vqa_images=4)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "synthetic"
    build_synthetic(out, SPEC)
    return out


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_bytes(root, tmp_path):
    build_synthetic(tmp_path / "again", SPEC)
    assert (tmp_path / "again" / "manifest.parquet").read_bytes() == (root / "manifest.parquet").read_bytes()
    with pytest.raises(FileExistsError):
        build_synthetic(tmp_path / "again", SPEC)


def test_manifest_lists_every_file_with_its_hash(root):
    rows = pq.read_table(root / "manifest.parquet").to_pylist()
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {"manifest.parquet"}
    assert {r["path"] for r in rows} == on_disk
    for r in rows[:: max(1, len(rows) // 25)]:
        assert hashlib.sha256((root / r["path"]).read_bytes()).hexdigest() == r["sha256"]
    assert all(r["licence"] for r in rows)
    assert {"easy-vqa 1.0 (train)", "synthetic"} <= {r["source"] for r in rows}


def _image_token_counts(sample):
    return [t["value"].count("<image>") for t in sample["conversations"]]


def test_pretrain_file_is_558k_style(root):
    samples = json.loads((root / "llava_pretrain/blip_laion_cc_sbu_558k.json").read_text())
    assert len(samples) == SPEC.train_scenes + SPEC.easy_vqa_images + 8
    assert len({s["id"] for s in samples}) == len(samples)
    for s in samples:
        assert [t["from"] for t in s["conversations"]] == ["human", "gpt"]
        assert _image_token_counts(s) == [1, 0]
        assert (root / "llava_pretrain/images" / s["image"]).is_file()
    positions = Counter(s["conversations"][0]["value"].startswith("<image>") for s in samples)
    assert positions[True] and positions[False]  # both placements of <image> occur, as in LCS-558K


def test_finetune_file_is_665k_style(root):
    samples = json.loads((root / "llava_v1_5_mix665k.json").read_text())
    text_only = [s for s in samples if "image" not in s]
    assert text_only and all(sum(_image_token_counts(s)) == 0 for s in text_only)
    for s in samples:
        roles = [t["from"] for t in s["conversations"]]
        assert roles == ["human", "gpt"] * (len(roles) // 2)
        if "image" in s:
            assert _image_token_counts(s)[0] == 1 and sum(_image_token_counts(s)) == 1
            assert (root / s["image"]).is_file()
    folders = {s["image"].split("/")[0] for s in samples if "image" in s}
    assert folders == {"coco", "gqa", "textvqa", "ocr_vqa", "vg"}
    assert max(len(s["conversations"]) for s in samples) >= 4  # multi-turn


def test_scene_questions_cover_the_665k_formats_with_right_answers():
    """Every kind of question about the title, the code and the shapes, in each response format, answered from the
    scene's ground truth: short answers, balanced yes/no (the code too), lettered choices (title and code)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, scene = render_scene(rng, 1024, 768)
        qa = scene_questions(scene, rng)
        assert qa[0] == (f"What is the six-digit code printed in small type?\n{SHORT_ANSWER}", scene.code)
        yes_no = [(q, a) for q, a in qa if q.startswith("Is ")]
        assert Counter(a for _, a in yes_no)["Yes"] == 3 and Counter(a for _, a in yes_no)["No"] in (2, 3)
        code_checks = {a: q for q, a in yes_no if "small code" in q}
        assert scene.code in code_checks["Yes"] and scene.code not in code_checks["No"]
        choices = [(q, a) for q, a in qa if q.endswith(LETTER_ANSWER)]
        assert len(choices) == 2
        for question, letter in choices:
            option = dict(line.split(". ", 1) for line in question.splitlines() if line[:2] in ("A.", "B.", "C.", "D."))
            assert option[letter] in (scene.title, scene.code)


def test_images_are_high_resolution_any_aspect_and_exercise_decoders(root):
    sizes, formats = [], Counter()
    for path in (root / "llava_pretrain/images").rglob("*"):
        if path.is_file():
            header = read_header(path)
            sizes.append((header.width, header.height))
            formats[(header.format, header.mode, header.orientation)] += 1
    aspects = [w / h for w, h in sizes]
    assert max(aspects) >= 4 and min(aspects) <= 1 / 4
    assert max(max(s) for s in sizes) >= 1500 and min(max(s) for s in sizes) <= 320
    assert ("JPEG", "RGB", 6) in formats and ("PNG", "P", 1) in formats


def test_benchmark_files_parse_and_agree(root):
    ev = root / "eval"
    textvqa = jsonl(ev / "textvqa/llava_textvqa_val_v051_ocr.jsonl")
    annotations = json.loads((ev / "textvqa/TextVQA_0.5.1_val.json").read_text())["data"]
    assert len(textvqa) == len(annotations) == SPEC.eval_scenes
    assert all(len(a["answers"]) == 10 for a in annotations)
    assert all(q["text"].count("\n") == 2 and "Reference OCR token:" in q["text"] for q in textvqa)

    pope = jsonl(ev / "pope/llava_pope_test.jsonl")
    for category in ("adversarial", "popular", "random"):
        labels = jsonl(ev / f"pope/coco/coco_pope_{category}.json")
        asked = [q for q in pope if q["category"] == category]
        assert [q["question_id"] for q in asked] == [lab["question_id"] for lab in labels]
        assert {lab["label"] for lab in labels} <= {"yes", "no"}

    gqa = jsonl(ev / "gqa/llava_gqa_testdev_balanced.jsonl")
    gqa_answers = json.loads((ev / "gqa/testdev_balanced_questions.json").read_text())
    assert all(isinstance(q["question_id"], str) and q["question_id"] in gqa_answers for q in gqa)

    mme = jsonl(ev / "mme/llava_mme.jsonl")
    assert all(mme[i]["image"] == mme[i + 1]["image"] for i in range(0, len(mme), 2))  # pairs are consecutive
    gt = (ev / "mme/MME_Benchmark_release_version/OCR/questions_answers_YN/000000.txt").read_text().splitlines()
    assert [line.split("\t")[1] for line in gt] == ["Yes", "No"]

    sqa = json.loads((ev / "scienceqa/llava_test_CQM-A.json").read_text())
    problems = json.loads((ev / "scienceqa/problems.json").read_text())
    for item in sqa:
        assert "ABCDE"[problems[item["id"]]["answer"]] == item["conversations"][1]["value"]
    assert sum("image" in item for item in sqa) == SPEC.eval_scenes


@pytest.mark.parametrize("name", ["mmbench_dev_20230712.tsv", "mmbench_dev_cn_20231003.tsv"])
def test_mmbench_circular_passes(root, name):
    with (root / "eval/mmbench" / name).open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 4 * SPEC.eval_scenes
    by_question = {}
    for row in rows:
        by_question.setdefault(int(row["index"]) % 1_000_000, []).append(row)
    for passes in by_question.values():
        truths = {p[p["answer"]] for p in passes}
        assert len(passes) == 4 and len(truths) == 1  # every pass points at the same option text
    image = Image.open(io.BytesIO(base64.b64decode(rows[0]["image"])))
    assert image.format == "JPEG" and max(image.size) <= 768


def test_fine_detail_questions_in_gqa_and_finetune(root):
    """The fine-line questions: balanced in GQA (chance 50%), only on large images, asked in fine-tuning."""
    ev = root / "eval/gqa"
    gqa = jsonl(ev / "llava_gqa_testdev_balanced.jsonl")
    gold = json.loads((ev / "testdev_balanced_questions.json").read_text())
    fine = [q for q in gqa if q["category"] == "fine_detail"]
    assert all(q["question_id"].startswith("fd") for q in fine)
    assert not any(q["question_id"].startswith("fd") for q in gqa if q["category"] != "fine_detail")
    assert len(fine) >= FINE_DETAIL_PER_SCENE * SPEC.eval_scenes
    answers = Counter(gold[q["question_id"]]["answer"] for q in fine)
    assert set(answers) == set(LINES) and abs(answers["horizontal"] - answers["vertical"]) <= SPEC.eval_scenes
    assert all(q["text"] == f"{FINE_LINES_QUESTION}\nAnswer the question using a single word or phrase."
               for q in fine)
    assert all(max(Image.open(ev / "images" / q["image"]).size) >= FINE_LINES_MIN_SIDE for q in fine)
    samples = json.loads((root / "llava_v1_5_mix665k.json").read_text())
    asked = [t for s in samples for h, a in zip(s["conversations"][::2], s["conversations"][1::2], strict=True)
             for t in [(h["value"], a["value"])] if FINE_LINES_QUESTION in t[0]]
    assert asked and {a for _, a in asked} <= set(LINES)
    captions = json.loads((root / "llava_pretrain/blip_laion_cc_sbu_558k.json").read_text())
    assert any(f"fine {o} lines" in c["conversations"][1]["value"] for c in captions for o in LINES)


def test_fine_detail_orientation_does_not_follow_the_aspect(root):
    """The extra GQA fine-line scenes cycle the aspects: each aspect seen twice gets both orientations, so the
    padding shape of a 336x336 view cannot stand in for the lines."""
    ev = root / "eval/gqa"
    gold = json.loads((ev / "testdev_balanced_questions.json").read_text())
    by_aspect = {}
    for q in jsonl(ev / "llava_gqa_testdev_balanced.jsonl"):
        if q["category"] == "fine_detail" and q["image"].startswith("fd"):
            w, h = Image.open(ev / "images" / q["image"]).size
            by_aspect.setdefault(round(w / h, 1), []).append(gold[q["question_id"]]["answer"])
    repeated = [answers for answers in by_aspect.values() if len(answers) >= 2]
    assert repeated and all(set(answers) == set(LINES) for answers in repeated)


def test_extra_fine_line_scenes_only_add_samples(root, tmp_path):
    """fine_line_scenes adds large scenes asked only the fine-line question; everything else keeps its bytes."""
    spec = SyntheticSpec(SPEC.seed, SPEC.train_scenes, SPEC.eval_scenes, SPEC.easy_vqa_images, fine_line_scenes=5)
    out = tmp_path / "extra"
    build_synthetic(out, spec)
    before = {r["path"]: r["sha256"] for r in pq.read_table(root / "manifest.parquet").to_pylist()}
    after = {r["path"]: r["sha256"] for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    changed = {p for p in before if after.get(p) != before[p]}
    assert changed == {"llava_v1_5_mix665k.json", "README.md"}
    samples = json.loads((out / "llava_v1_5_mix665k.json").read_text())
    extra = [s for s in samples if s["id"].startswith("0000003")]
    assert len(extra) == 5 and set(after) - set(before) == {s["image"] for s in extra}
    for s in extra:
        human, gpt = s["conversations"]
        assert human["value"] == f"<image>\n{FINE_LINES_QUESTION}\nAnswer the question using a single word or phrase."
        assert gpt["value"] in LINES and max(Image.open(out / s["image"]).size) >= FINE_LINES_MIN_SIDE
    old = json.loads((root / "llava_v1_5_mix665k.json").read_text())
    assert sorted(json.dumps(s) for s in old) == sorted(json.dumps(s) for s in samples if s not in extra)


@pytest.mark.parametrize("long_side", [FINE_LINES_MIN_SIDE, 1612, 1613, 2048])
def test_line_period_is_erased_at_336_and_at_least_4px(long_side):
    period = line_period(long_side)
    assert period % 2 == 0 and period >= 4 and period * 336 / long_side <= 1.25


@pytest.mark.parametrize("size", [(1400, 1050), (2048, 2048), (2048, 341)])
def test_fine_lines_survive_uhd_slices_but_not_pad336(size):
    """The information is physically gone at 336x336 (both orientations average to the same flat colour) and
    kept in UHD's slices: RMS difference of the encodings of one scene drawn with either orientation."""
    def rms(strategy, preset):
        layout = plan_layout(*size, strategy, preset)
        enc = [encode_image(render_scene(np.random.default_rng(7), *size, lines=o)[0], layout) for o in LINES]
        pick = [list(e.slices) if layout.slices else [e.overview] for e in enc]
        return float(np.sqrt(np.mean([np.mean((a - b) ** 2) for a, b in zip(*pick, strict=True)])))

    assert rms("pad336", "pad336") < 0.03  # lines of +/-0.93 (normalized) leave < 5% of their amplitude
    assert rms("uhd", "uhd-arxiv") > 0.3
