"""The embedded dataset: LLaVA's real file formats, generated offline and deterministically from a seed.

Layout under the output root (the same relative paths the real data uses, so every later stage runs the
same code on both):

    llava_pretrain/blip_laion_cc_sbu_558k.json   + llava_pretrain/images/<5 digits>/<9 digits>.<ext>
    llava_v1_5_mix665k.json                      + coco/train2017, gqa/images, textvqa/train_images,
                                                   ocr_vqa/images, vg/VG_100K (image folder = the root)
    eval/<benchmark>/...                         the benchmark files (see synthetic_eval.py)
    manifest.parquet, README.md                  every file with bytes/sha256/source/licence; the data card

Images: rendered fine-detail scenes (synthetic_images.py), easy-VQA's 64x64 shapes (MIT) and
scikit-image's sample photos (CC0 / public domain), all read from installed packages, never downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from components.config import DataConfig

from .conversation import LETTER_ANSWER, SHORT_ANSWER
from .synthetic_images import (
    ASPECTS,
    COLOURS,
    FINE_LINES_MIN_SIDE,
    FINE_LINES_QUESTION,
    SHAPES,
    TITLES,
    Scene,
    encode_image_file,
    other_code,
    render_scene,
    scene_size,
)

CAPTION_PROMPTS = (  # the instruction pool of LLaVA's LCS-558K
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
TURNS_PER_SCENE = 6  # questions per fine-tuning scene (of scene_questions' 11-12), plus the fine-line one
FINETUNE_FOLDERS = ("coco/train2017", "gqa/images", "textvqa/train_images", "ocr_vqa/images", "vg/VG_100K")

# scikit-image sample photos: (file in skimage/data, caption, licence as stated in its docstring)
SKIMAGE_PHOTOS = (
    ("astronaut.png", "an astronaut in a white spacesuit in front of a flag", "public domain (NASA)"),
    ("chelsea.png", "a tabby cat looking to the side", "CC0 (Stefan van der Walt)"),
    ("coffee.png", "a cup of coffee on a saucer", "CC0 (Rachel Michetti)"),
    ("rocket.jpg", "a rocket on its launch pad", "public domain (SpaceX)"),
    ("hubble_deep_field.jpg", "many distant galaxies in deep space", "public domain (NASA)"),
    ("retina.jpg", "a photograph of the back of a human eye", "CC0"),
    ("horse.png", "the silhouette of a horse", "CC0 (Andreas Preuss)"),
    ("camera.png", "a black and white photo of a man with a camera", "CC0 (Lav Varshney)"),
)


_DATA = DataConfig()  # the defaults are params `data`'s (components/config.py)


@dataclass(frozen=True)
class SyntheticSpec:
    seed: int = _DATA.seed
    train_scenes: int = _DATA.synthetic.train_scenes  # fine-detail scenes for each of pretraining and fine-tuning
    eval_scenes: int = _DATA.synthetic.eval_scenes  # held-out scenes per benchmark
    easy_vqa_images: int = _DATA.synthetic.easy_vqa_images  # real easy-VQA images (64x64) mixed into both sets
    fine_line_scenes: int = _DATA.synthetic.fine_line_scenes  # >= FINE_LINES_MIN_SIDE, asked about lines only

    @classmethod
    def from_params(cls, data: DataConfig) -> SyntheticSpec:
        size = data.synthetic
        return cls(data.seed, size.train_scenes, size.eval_scenes, size.easy_vqa_images, size.fine_line_scenes)


class DatasetWriter:
    """Writes files under a root and keeps the manifest: nothing is written without a row."""

    def __init__(self, root: Path):
        self.root = root
        self.rows: list[dict] = []

    def write(self, rel: str, data: bytes, source: str, licence: str) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.rows.append({"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                          "source": source, "licence": licence})
        return rel

    def write_json(self, rel: str, obj, jsonl: bool = False) -> str:
        text = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in obj) if jsonl else json.dumps(
            obj, ensure_ascii=False, indent=1)
        return self.write(rel, text.encode("utf-8"), "synthetic", "CC0 (generated)")

    def write_scene(self, rel_stem: str, image: Image.Image, variant: int) -> str:
        data, ext = encode_image_file(image, variant)
        return self.write(f"{rel_stem}.{ext}", data, "synthetic", "CC0 (generated)")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the embedded dataset needs the package {name!r}: pip install the project's extras")
    return Path(spec.submodule_search_locations[0])


def easy_vqa_items(split: str, limit: int) -> list[tuple[Path, list[tuple[str, str]]]]:
    """(image file, [(question, answer), ...]) for the first `limit` easy-VQA images of a split."""
    root = _package_dir("easy_vqa") / "data" / split
    by_image: dict[int, list[tuple[str, str]]] = {}
    for question, answer, image_id in json.loads((root / "questions.json").read_text()):
        by_image.setdefault(int(image_id), []).append((question, answer))
    ids = sorted(by_image)[:limit]
    return [(root / "images" / f"{i}.png", by_image[i]) for i in ids]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene) -> str:
    parts = [f"{_article(s.colour)} {s.colour} {s.shape}" for s in scene.shapes]
    text = f"a sign reading {scene.title} with the code {scene.code} in small print, " + " and ".join(parts)
    return text + (f", on a background of fine {scene.lines} lines" if scene.lines else "")


def fine_lines_question(scene: Scene) -> tuple[str, str] | None:
    """The fine-detail question a 336x336 view cannot answer (its lines average to flat), GQA-style."""
    return (f"{FINE_LINES_QUESTION}\n{SHORT_ANSWER}", scene.lines) if scene.lines else None


def _choice(question: str, options: list[str]) -> str:
    lines = "\n".join(f"{'ABCD'[k]}. {option}" for k, option in enumerate(options))
    return f"{question}\n{lines}\n{LETTER_ANSWER}"


def scene_questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Question/answer pairs about one scene in the 665K mix's formats (short answers with LLaVA-1.5's suffix,
    balanced yes/no, lettered multiple choice as A-OKVQA's), each asked about the title, the code and the
    shapes; the first always needs the fine detail."""
    shape = scene.shapes[0]
    absent = [s for s in SHAPES if s not in scene.shape_names]
    other_colour = [c for c in COLOURS if c != shape.colour][int(rng.integers(len(COLOURS) - 1))]
    titles = [scene.title, *rng.permutation([t for t in TITLES if t != scene.title])[:3].tolist()]
    titles = [titles[k] for k in rng.permutation(4)]
    codes = [scene.code, *(other_code(scene.code, rng) for _ in range(2))]
    codes = [codes[k] for k in rng.permutation(3)]
    qa = [
        ("What is the six-digit code printed in small type?", scene.code),
        (f"Is the small code in this image {scene.code}?", "Yes"),
        (f"Is the small code in this image {next(c for c in codes if c != scene.code)}?", "No"),
        ("What word is written in large letters?", scene.title),
        (f"What color is the {shape.shape}?", shape.colour),
        ("How many shapes are there besides the text?", str(len(scene.shapes))),
        (f"Is there a {shape.shape} in the image?", "Yes"),
        (f"Is there a {shape.colour} {shape.shape} in the image?", "Yes"),
        (f"Is there a {other_colour} {shape.shape} in the image?", "No"),
    ]
    if absent:
        qa.append((f"Is there a {absent[int(rng.integers(len(absent)))]} in the image?", "No"))
    short = [(f"{q}\n{SHORT_ANSWER}", a) for q, a in qa]
    return short + [(_choice("Which word is written in large letters?", titles), "ABCD"[titles.index(scene.title)]),
                    (_choice("Which number is printed in small type?", codes), "ABCD"[codes.index(scene.code)])]


def _conversation(pairs: list[tuple[str, str]], with_image: bool) -> list[dict]:
    turns = []
    for i, (q, a) in enumerate(pairs):
        turns.append({"from": "human", "value": ("<image>\n" if with_image and i == 0 else "") + q})
        turns.append({"from": "gpt", "value": a})
    return turns


def _pretrain(writer: DatasetWriter, spec: SyntheticSpec, rng: np.random.Generator) -> list[dict]:
    samples = []

    def add(image_rel: str, text: str) -> None:
        prompt = CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))]
        human = f"{prompt}\n<image>" if rng.random() < 0.5 else f"<image>\n{prompt}"  # both occur in 558K
        sample_id = Path(image_rel).stem
        samples.append({"id": sample_id, "image": image_rel,
                        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": text}]})

    for i in range(spec.train_scenes):
        image, scene = render_scene(rng, *scene_size(rng, i))
        rel = writer.write_scene(f"llava_pretrain/images/{i // 1000:05d}/{i:09d}", image, i)
        add(rel.removeprefix("llava_pretrain/images/"), caption(scene))
    base = spec.train_scenes
    for j, (png, qa) in enumerate(easy_vqa_items("train", spec.easy_vqa_images)):
        colour = next((a for q, a in qa if "color" in q), "colored")
        shape = next((a for q, a in qa if a in SHAPES or a == "rectangle"), "shape")
        rel = writer.write(f"llava_pretrain/images/{(base + j) // 1000:05d}/{base + j:09d}.png", png.read_bytes(),
                           "easy-vqa 1.0 (train)", "MIT (Victor Zhou)")
        add(rel.removeprefix("llava_pretrain/images/"), f"{_article(colour)} {colour} {shape} on a plain background")
    base += spec.easy_vqa_images
    for k, (name, text, licence) in enumerate(SKIMAGE_PHOTOS):
        data = (_package_dir("skimage") / "data" / name).read_bytes()
        rel = writer.write(f"llava_pretrain/images/{(base + k) // 1000:05d}/{base + k:09d}{Path(name).suffix}",
                           data, f"scikit-image 0.26.0 data/{name}", licence)
        add(rel.removeprefix("llava_pretrain/images/"), text)
    return samples


def _finetune(writer: DatasetWriter, spec: SyntheticSpec, rng: np.random.Generator) -> list[dict]:
    samples = []
    for i in range(spec.train_scenes):
        image, scene = render_scene(rng, *scene_size(rng, i + 5))  # other shapes than pretraining's
        folder = FINETUNE_FOLDERS[i % len(FINETUNE_FOLDERS)]
        rel = writer.write_scene(f"{folder}/{100000 + i:012d}", image, i + 1)
        qa = scene_questions(scene, rng)
        # many questions in one multi-turn sample, as the 665K mix groups VQAv2's: the ~450 visual tokens
        # dominate the sequence, so each extra answer is cheap supervision; a random TURNS_PER_SCENE of them
        # keeps each sample's text (~35 tokens a turn) from outgrowing its image
        keep = [qa[0], *[qa[j] for j in rng.permutation(np.arange(1, len(qa)))[: TURNS_PER_SCENE - 1]]]
        if scene.lines:  # every scene that has the lines is asked about them (the signal a tiny model can learn)
            keep.insert(int(rng.integers(len(keep) + 1)), fine_lines_question(scene))
        samples.append({"id": f"{100000 + i:012d}", "image": rel, "conversations": _conversation(keep, True)})
    for j, (png, qa) in enumerate(easy_vqa_items("train", spec.easy_vqa_images)):
        rel = writer.write(f"gqa/images/ev{j:06d}.png", png.read_bytes(), "easy-vqa 1.0 (train)", "MIT (Victor Zhou)")
        pairs = [(f"{q[0].upper()}{q[1:]}\n{SHORT_ANSWER}", a.capitalize() if a in ("yes", "no") else a)
                 for q, a in qa[:3]]
        samples.append({"id": f"ev{j:06d}", "image": rel, "conversations": _conversation(pairs, True)})
    for k, (name, text, licence) in enumerate(SKIMAGE_PHOTOS):
        rel = writer.write(f"vg/VG_100K/sk{k:04d}{Path(name).suffix}",
                           (_package_dir("skimage") / "data" / name).read_bytes(),
                           f"scikit-image 0.26.0 data/{name}", licence)
        samples.append({"id": f"sk{k:04d}", "image": rel,
                        "conversations": _conversation([("Describe this image briefly.", text.capitalize() + ".")],
                                                       True)})
    samples += _fine_line_samples(writer, spec)
    for t in range(max(2, spec.train_scenes // 8)):  # text-only samples, as in the 665K mix
        a, b = int(rng.integers(2, 99)), int(rng.integers(2, 99))
        samples.append({"id": f"text{t:06d}", "conversations": _conversation(
            [(f"What is {a} plus {b}?", str(a + b)), ("And that number times two?", str(2 * (a + b)))], False)})
    order = rng.permutation(len(samples))
    return [samples[i] for i in order]


def _fine_line_samples(writer: DatasetWriter, spec: SyntheticSpec) -> list[dict]:
    """spec.fine_line_scenes large scenes (long side 1280-2048 px, every aspect, orientation drawn), each with the
    single fine-line question: a denser training signal for benchmarks/fine_detail.py. Their own random stream,
    so the default (0) leaves the rest of the set byte-identical; the eval scenes use other streams."""
    rng, samples = np.random.default_rng([spec.seed, 3]), []
    for i in range(spec.fine_line_scenes):
        aw, ah = ASPECTS[i % len(ASPECTS)]
        scale = int(rng.integers(FINE_LINES_MIN_SIDE, 2049)) / max(aw, ah)
        image, scene = render_scene(rng, max(int(aw * scale), 8), max(int(ah * scale), 8))
        folder = FINETUNE_FOLDERS[i % len(FINETUNE_FOLDERS)]
        rel = writer.write_scene(f"{folder}/{300000 + i:012d}", image, i + 2)
        samples.append({"id": f"{300000 + i:012d}", "image": rel,
                        "conversations": _conversation([fine_lines_question(scene)], True)})
    return samples


def build_synthetic(out: str | Path, spec: SyntheticSpec) -> DatasetWriter:
    """Write the whole embedded dataset under `out` (which must be empty or absent)."""
    from .synthetic_eval import write_benchmarks

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; the download stage clears its output first")
    writer = DatasetWriter(out)
    rng = np.random.default_rng(spec.seed)
    writer.write_json("llava_pretrain/blip_laion_cc_sbu_558k.json", _pretrain(writer, spec, rng))
    writer.write_json("llava_v1_5_mix665k.json", _finetune(writer, spec, rng))
    write_benchmarks(writer, spec)  # held-out scenes from their own random streams
    writer.write("README.md", data_card(writer.rows, spec).encode(), "synthetic", "CC0 (generated)")
    rows = sorted(writer.rows, key=lambda r: r["path"])
    pq.write_table(pa.Table.from_pylist(rows), out / "manifest.parquet")
    return writer


def data_card(rows: list[dict], spec: SyntheticSpec) -> str:
    """The dataset's README: what is in it, how many, under which licence, how it was made."""
    by_top: dict[str, list[int]] = {}
    by_source: dict[tuple[str, str], int] = {}
    for r in rows:
        top = r["path"].split("/")[0] if not r["path"].startswith("eval/") else "/".join(r["path"].split("/")[:2])
        by_top.setdefault(top, [0, 0])
        by_top[top][0] += 1
        by_top[top][1] += r["bytes"]
        key = (r["source"].split(" (")[0].split(" data/")[0], r["licence"])
        by_source[key] = by_source.get(key, 0) + 1
    lines = [
        "# Embedded dataset (data.source: synthetic)",
        "",
        f"Generated by `components/data/synthetic.py` with seed {spec.seed}: {spec.train_scenes} training scenes per",
        f"stage, {spec.eval_scenes} held-out scenes per benchmark, {spec.easy_vqa_images} easy-VQA images, "
        f"{len(SKIMAGE_PHOTOS)} scikit-image photos. Same seed, same bytes.",
        "",
        "Scenes are high-resolution images (up to 2048 px, aspect 1:6 to 6:1, plus small ones) with a large",
        "title word, a six-digit code in small print (~1/70 of the long side: legible in UHD slices, a few",
        "pixels after a 336x336 downscale) and small coloured shapes. Scenes with a long side >= 1280 px have",
        "fine horizontal or vertical lines over the background (a 4-6 px period: flat grey at 336x336, kept in",
        "UHD's slices); the fine-tuning set and GQA (question ids `fd...`) ask about them"
        + (f", and {spec.fine_line_scenes} extra fine-tuning scenes ask only that." if spec.fine_line_scenes else "."),
        "Files are in LLaVA's exact formats:",
        "`llava_pretrain/blip_laion_cc_sbu_558k.json` (captions), `llava_v1_5_mix665k.json` (multi-turn,",
        "text-only samples included), and `eval/` (TextVQA, POPE, GQA, MME, ScienceQA, MMBench EN/CN files).",
        "",
        "| folder | files | MiB |",
        "|---|---:|---:|",
        *[f"| `{k}` | {v[0]} | {v[1] / 2**20:.1f} |" for k, v in sorted(by_top.items())],
        "",
        "| source | licence | files |",
        "|---|---|---:|",
        *[f"| {s} | {lic} | {n} |" for (s, lic), n in sorted(by_source.items())],
        "",
        "Every file is listed in `manifest.parquet` with its bytes, sha256, source and licence.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["COLOURS", "SyntheticSpec", "build_synthetic", "caption", "easy_vqa_items", "fine_lines_question",
           "scene_questions"]
