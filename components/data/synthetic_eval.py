"""Benchmark files of the embedded dataset, in the real formats of LLaVA-1.5's evaluation (eval.md §2).

Each benchmark gets its own held-out scenes under eval/<benchmark>/, the question file the LLaVA runner
reads (prompt suffixes included) and the answer/annotation files its official scorer reads:

    textvqa   llava_textvqa_val_v051_ocr.jsonl, TextVQA_0.5.1_val.json, train_images/
    pope      llava_pope_test.jsonl, coco/coco_pope_{adversarial,popular,random}.json, val2014/
    gqa       llava_gqa_testdev_balanced.jsonl, testdev_balanced_questions.json, images/
    mme       llava_mme.jsonl, MME_Benchmark_release_version/<task>/{images,questions_answers_YN}/
    scienceqa llava_test_CQM-A.json, problems.json, pid_splits.json, images/test/<pid>/image.png
    mmbench   mmbench_dev_20230712.tsv, mmbench_dev_cn_20231003.tsv (base64 images, circular passes)
"""

from __future__ import annotations

import base64
import csv
import io

import numpy as np
from PIL import Image

from .conversation import SHORT_ANSWER as SHORT
from .synthetic_images import (
    ASPECTS,
    COLOURS,
    FINE_LINES_MIN_SIDE,
    FINE_LINES_QUESTION,
    LINES,
    SHAPES,
    TITLES,
    Scene,
    other_code,
    render_scene,
    scene_size,
)

MME_SUFFIX = " Please answer yes or no."
FINE_DETAIL = "fine_detail"  # GQA question-file category (and "fd" id prefix) of the fine-line questions
FINE_DETAIL_PER_SCENE = 4  # extra GQA scenes with fine lines per eval scene: enough questions for a clear rate


def _scenes(writer, rng, spec, folder: str, stem, max_side: int | None = None, variant: int = 0):
    """Render spec.eval_scenes scenes into eval/<folder>/; yield (relative image path, scene, image).
    variant 0 writes JPEG (as most benchmarks ship), 5 writes PNG (ScienceQA's image.png)."""
    for i in range(spec.eval_scenes):
        width, height = scene_size(rng, i + 3)
        if max_side and max(width, height) > max_side:
            scale = max_side / max(width, height)
            width, height = max(int(width * scale), 8), max(int(height * scale), 8)
        image, scene = render_scene(rng, width, height)
        rel = writer.write_scene(f"eval/{folder}/{stem(i)}", image, variant)
        yield rel.removeprefix(f"eval/{folder}/"), scene, image


def textvqa(writer, spec, rng) -> None:
    questions, data = [], []
    for i, (rel, scene, _) in enumerate(_scenes(writer, rng, spec, "textvqa", lambda i: f"train_images/{i:016x}")):
        image_id = f"{i:016x}"
        question = "what is the six-digit code printed in small type?"
        # The reference OCR tokens hold what a detector reads at a glance (the title), not the small code.
        text = f"{question}\nReference OCR token: {scene.title}\n{SHORT}"
        questions.append({"question_id": image_id, "image": rel.removeprefix("train_images/"), "text": text})
        answers = [scene.code] * 9 + [scene.code[:3] + " " + scene.code[3:]]
        data.append({"image_id": image_id, "question_id": i, "question": question, "answers": answers,
                     "image_width": scene.width, "image_height": scene.height, "set_name": "val"})
    writer.write_json("eval/textvqa/llava_textvqa_val_v051_ocr.jsonl", questions, jsonl=True)
    writer.write_json("eval/textvqa/TextVQA_0.5.1_val.json", {"dataset_type": "val", "dataset_name": "textvqa",
                                                             "dataset_version": "0.5.1", "data": data})


def pope(writer, spec, rng) -> None:
    scenes = list(_scenes(writer, rng, spec, "pope", lambda i: f"val2014/COCO_val2014_{i:012d}"))
    counts = {s: sum(s in sc.shape_names for _, sc, _ in scenes) for s in SHAPES}
    popular = max(counts, key=counts.get)
    lines, labels, qid = [], {c: [] for c in ("adversarial", "popular", "random")}, 1
    for category in ("adversarial", "popular", "random"):
        for rel, scene, _ in scenes:
            present = scene.shapes[0]
            if category == "adversarial":  # the shape is there, but in another colour
                colour = next(c for c in COLOURS if c != present.colour)
                negative = f"Is there a {colour} {present.shape} in the image?"
            elif category == "popular":
                negative = f"Is there a {popular} in the image?" if popular not in scene.shape_names else None
            else:
                absent = [s for s in SHAPES if s not in scene.shape_names]
                negative = f"Is there a {absent[int(rng.integers(len(absent)))]} in the image?" if absent else None
            positive = f"Is there a {present.colour} {present.shape} in the image?" if category == "adversarial" \
                else f"Is there a {present.shape} in the image?"
            for text, label in ((positive, "yes"), (negative, "no")):
                if text is None:
                    continue
                lines.append({"question_id": qid, "image": rel.removeprefix("val2014/"), "text": f"{text}\n{SHORT}",
                              "category": category})
                labels[category].append({"question_id": qid, "image": rel.removeprefix("val2014/"), "text": text,
                                         "label": label})
                qid += 1
    writer.write_json("eval/pope/llava_pope_test.jsonl", lines, jsonl=True)
    for category, rows in labels.items():  # jsonl despite the .json name, as in POPE's repository
        writer.write_json(f"eval/pope/coco/coco_pope_{category}.json", rows, jsonl=True)


def _gqa_item(qid: str, image_id: str, rel: str, question: str, answer: str, detailed: str, category: str):
    line = {"question_id": qid, "image": rel.removeprefix("images/"), "text": f"{question}\n{SHORT}",
            "category": category}
    annotation = {"imageId": image_id, "question": question, "answer": answer,
                  "fullAnswer": f"The answer is {answer}.", "isBalanced": True,
                  "types": {"structural": "query", "semantic": "attr", "detailed": detailed},
                  "groups": {"global": None, "local": f"10q-{detailed}"}}
    return line, annotation


def gqa(writer, spec, rng) -> None:
    """Colour/shape questions on the usual scenes, then the fine-line questions (category "fine_detail", ids
    "fd..."): on every usual scene that has lines, and on FINE_DETAIL_PER_SCENE x eval_scenes extra large
    scenes with the orientations alternating, so chance is 50%; the alternation shifts by one every cycle of
    ASPECTS, so each aspect ratio gets both orientations (the shape of the padding says nothing)."""
    lines, annotations = [], {}

    def add(*item) -> None:
        line, annotation = _gqa_item(*item)
        lines.append(line)
        annotations[line["question_id"]] = annotation

    for i, (rel, scene, _) in enumerate(_scenes(writer, rng, spec, "gqa", lambda i: f"images/n{i:06d}")):
        shape = scene.shapes[0]
        for j, (question, answer, detailed) in enumerate((
            (f"What color is the {shape.shape}?", shape.colour, "color"),
            (f"What shape is {shape.colour}?", shape.shape, "shape"),
        )):
            add(f"{2013000 + 10 * i + j}", f"n{i:06d}", rel, question, answer, detailed, "default")
        if scene.lines:
            add(f"fd{i:06d}", f"n{i:06d}", rel, FINE_LINES_QUESTION, scene.lines, "fineLines", FINE_DETAIL)
    for k in range(FINE_DETAIL_PER_SCENE * spec.eval_scenes):
        aw, ah = ASPECTS[k % len(ASPECTS)]
        scale = int(rng.integers(FINE_LINES_MIN_SIDE, 2049)) / max(aw, ah)
        orientation = LINES[(k + k // len(ASPECTS)) % 2]
        image, scene = render_scene(rng, max(int(aw * scale), 8), max(int(ah * scale), 8), lines=orientation)
        rel = writer.write_scene(f"eval/gqa/images/fd{k:06d}", image, 0).removeprefix("eval/gqa/")
        add(f"fd{spec.eval_scenes + k:06d}", f"fd{k:06d}", rel, FINE_LINES_QUESTION, scene.lines, "fineLines",
            FINE_DETAIL)
    writer.write_json("eval/gqa/llava_gqa_testdev_balanced.jsonl", lines, jsonl=True)
    writer.write_json("eval/gqa/testdev_balanced_questions.json", annotations)


def mme(writer, spec, rng) -> None:
    """Two questions per image (one yes, one no), consecutive in the question file, as in MME."""
    root = "MME_Benchmark_release_version"
    lines = []
    for task in ("OCR", "color", "existence"):
        for rel, scene, _ in _scenes(writer, rng, spec, f"mme/{root}/{task}", lambda i: f"images/{i:06d}"):
            pairs = _mme_pairs(task, scene, rng)
            gt = "".join(f"{q}{MME_SUFFIX}\t{a}\n" for q, a in pairs)
            stem = rel.removeprefix("images/").rsplit(".", 1)[0]
            writer.write(f"eval/mme/{root}/{task}/questions_answers_YN/{stem}.txt", gt.encode(), "synthetic",
                         "CC0 (generated)")
            for question, _ in pairs:
                lines.append({"question_id": f"{task}/{rel}", "image": f"{task}/{rel}",
                              "text": f"{question}\n{SHORT}", "category": task})
    writer.write_json("eval/mme/llava_mme.jsonl", lines, jsonl=True)


def _mme_pairs(task: str, scene: Scene, rng) -> list[tuple[str, str]]:
    shape = scene.shapes[0]
    if task == "OCR":
        return [(f"Is the small code in this image {scene.code}?", "Yes"),
                (f"Is the small code in this image {other_code(scene.code, rng)}?", "No")]
    if task == "color":
        other = next(c for c in COLOURS if c != shape.colour)
        return [(f"Is the {shape.shape} {shape.colour}?", "Yes"), (f"Is the {shape.shape} {other}?", "No")]
    absent = [s for s in SHAPES if s not in scene.shape_names] or ["star"]
    return [(f"Is there a {shape.shape} in this image?", "Yes"), (f"Is there a {absent[0]} in this image?", "No")]


def scienceqa(writer, spec, rng) -> None:
    items, problems, pids = [], {}, []
    scenes = _scenes(writer, rng, spec, "scienceqa", lambda i: f"images/test/{i + 1}/image", variant=5)
    for i, (_, scene, _) in enumerate(scenes):
        pid = str(i + 1)
        choices = [scene.code, other_code(scene.code, rng), other_code(scene.code, rng)]
        order = rng.permutation(3)
        choices = [choices[k] for k in order]
        answer = int(np.where(order == 0)[0][0])
        question = "Which number is printed in small type?"
        hint = "The sign shows a word in large letters and a code in small print."
        problems[pid] = {"question": question, "choices": choices, "answer": answer, "hint": hint,
                         "image": "image.png", "task": "closed choice", "grade": "grade3",
                         "subject": "language science", "topic": "reading", "category": "Read the sign",
                         "split": "test", "lecture": "", "solution": ""}
        options = "\n".join(f"{'ABCDE'[k]}. {c}" for k, c in enumerate(choices))
        items.append({"id": pid, "image": f"{pid}/image.png", "conversations": [
            {"from": "human", "value": f"<image>\nContext: {hint}\n{question}\n{options}"},
            {"from": "gpt", "value": "ABCDE"[answer]}]})
        pids.append(pid)
    text_pid = str(spec.eval_scenes + 1)  # a text-only question, as ScienceQA has: not in IMG accuracy
    problems[text_pid] = {"question": "Which word is a color?", "choices": ["table", "red"], "answer": 1, "hint": "",
                          "image": None, "task": "closed choice", "grade": "grade1", "subject": "language science",
                          "topic": "vocabulary", "category": "Words", "split": "test", "lecture": "", "solution": ""}
    items.append({"id": text_pid, "conversations": [
        {"from": "human", "value": "Which word is a color?\nA. table\nB. red"}, {"from": "gpt", "value": "B"}]})
    pids.append(text_pid)
    writer.write_json("eval/scienceqa/llava_test_CQM-A.json", items)
    writer.write_json("eval/scienceqa/problems.json", problems)
    writer.write_json("eval/scienceqa/pid_splits.json", {"train": [], "val": [], "test": pids})


def mmbench(writer, spec, rng) -> None:
    """One row per question per circular pass: index = pass * 1_000_000 + question, options rotated."""
    scenes = []
    for i in range(spec.eval_scenes):
        width, height = scene_size(rng, i)
        scale = min(1.0, 768 / max(width, height))  # base64 inside the TSV: keep the file small
        image, scene = render_scene(rng, max(int(width * scale), 8), max(int(height * scale), 8))
        scenes.append((image, scene))
    for lang, rel in (("en", "mmbench_dev_20230712.tsv"), ("cn", "mmbench_dev_cn_20231003.tsv")):
        rows = [row for q, (image, scene) in enumerate(scenes) for row in _mmbench_rows(q, image, scene, lang, rng)]
        buf = io.StringIO()
        out = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        out.writeheader()
        out.writerows(rows)
        writer.write(f"eval/mmbench/{rel}", buf.getvalue().encode("utf-8"), "synthetic", "CC0 (generated)")


def _mmbench_rows(q: int, image: Image.Image, scene: Scene, lang: str, rng) -> list[dict]:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    words = [scene.title] + [t for t in TITLES if t != scene.title][:3]
    options = [words[k] for k in rng.permutation(4)]
    question = "Which word is written in large letters?" if lang == "en" else "图中大字写的是哪个词？"
    rows = []
    for k in range(4):  # circular passes: rotate the options, the answer letter follows the right one
        rotated = options[k:] + options[:k]
        rows.append({"index": k * 1_000_000 + q, "question": question, "hint": "", "A": rotated[0], "B": rotated[1],
                     "C": rotated[2], "D": rotated[3], "answer": "ABCD"[rotated.index(scene.title)],
                     "category": "ocr", "image": encoded, "source": "synthetic", "l2-category": "fine-grained",
                     "comment": "", "split": "dev"})
    return rows


BENCHMARKS = {"textvqa": textvqa, "pope": pope, "gqa": gqa, "mme": mme, "scienceqa": scienceqa, "mmbench": mmbench}


def write_benchmarks(writer, spec) -> None:
    """Every benchmark from its own random stream: adding one never changes the others' files."""
    for name, build in BENCHMARKS.items():
        build(writer, spec, np.random.default_rng([spec.seed, 2, list(BENCHMARKS).index(name)]))
