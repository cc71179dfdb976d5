"""Every file the LLaVA-UHD / LLaVA-1.5 pipeline needs, where it comes from, and where it lands.

One place answers "what does a full run download?": the downloader, the DVC stage, the docs and the
tests all read this table instead of keeping their own URL lists. Paths are relative to
`<raw_root>/<dataset>/`; the layout under each dataset folder follows LLaVA's `playground/data` so the
annotation files' relative image paths resolve unchanged (e.g. 665K's `coco/train2017/x.jpg`).

Integrity: `sha256`/`size` are given only where they are published; we never invent them. For the
rest, the first verified download is recorded in `<raw_root>/<dataset>/sources.lock.json` and later
runs enforce it (components/data/download/), so an upstream change is caught, not silently used.

Sources that cannot be fetched by a program (browser-only Google Drive bundles, data released on
request) have `url=None` and a `note` saying how to get them; the downloader reports them as `missing`
with that note, and accepts a file placed by hand at `dest`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

Kind = Literal["file", "zip", "tar", "url_list"]
KINDS: tuple[str, ...] = ("file", "zip", "tar", "url_list")
ARCHIVE_KINDS: tuple[str, ...] = ("zip", "tar")
GB = 1_000_000_000
MB = 1_000_000


@dataclass(frozen=True)
class SourceFile:
    """One downloadable file.

    `dest` is where the downloaded bytes go (relative to the dataset folder). Archives (`zip`, `tar`)
    are kept (DVC tracks shards better than millions of loose files) and extracted into `extract_to`.
    A `url_list` is a JSON file whose entries name per-item URLs (OCR-VQA's `dataset.json`): each
    entry is fetched to `items_dest.format(id=<key>)`, and dead entries are reported as missing.
    `approx_bytes` is the publisher's rounded figure, used only to estimate disk space, never to verify.
    """

    name: str
    url: str | None
    dest: str
    kind: Kind = "file"
    size: int | None = None
    sha256: str | None = None
    license: str = ""
    note: str = ""
    extract_to: str | None = None  # archives only: folder (relative to the dataset folder) to extract into
    items_dest: str | None = None  # url_list only: per-item path template with "{id}"
    items_url_key: str = "imageURL"  # url_list only: the entry field holding the item's URL
    approx_bytes: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.url is None and not self.note:
            raise ValueError(f"{self.name}: a source without a URL needs a note saying how to obtain it")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"{self.name}: url must be http(s), got {self.url!r}")
        check_relative(self.dest, f"{self.name}.dest")
        if self.kind in ARCHIVE_KINDS:
            if self.extract_to is None:
                raise ValueError(f"{self.name}: an archive needs extract_to")
            check_relative(self.extract_to, f"{self.name}.extract_to", allow_dot=True)
        if self.kind == "url_list":
            if not self.items_dest or "{id}" not in self.items_dest:
                raise ValueError(f"{self.name}: a url_list needs items_dest with an {{id}} placeholder")
            check_relative(self.items_dest.replace("{id}", "x"), f"{self.name}.items_dest")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")

    @property
    def is_archive(self) -> bool:
        return self.kind in ARCHIVE_KINDS


@dataclass(frozen=True)
class Dataset:
    """A folder under the raw root: the files of one corpus or benchmark.

    `depends_on` names datasets whose files this one reads (GQA evaluation uses the GQA images that
    the 665K mix downloads): listed, not duplicated, so 20 GB are not fetched twice.
    """

    name: str
    description: str
    files: tuple[SourceFile, ...]
    depends_on: tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not self.files:
            raise ValueError(f"dataset {self.name}: no files")
        dests = [f.dest for f in self.files]
        if len(set(dests)) != len(dests):
            raise ValueError(f"dataset {self.name}: two files share a dest")

    def file(self, name: str) -> SourceFile:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(f"dataset {self.name} has no file {name!r}; has {[f.name for f in self.files]}")


def check_relative(path: str, what: str, allow_dot: bool = False) -> str:
    """Reject absolute paths, `..` and backslashes: catalog paths must stay inside the dataset folder."""
    parts = PurePosixPath(path).parts
    if (not path or path.startswith("/") or "\\" in path or ".." in parts
            or (not allow_dot and path in (".", "./"))):
        raise ValueError(f"{what}: {path!r} must be a relative path inside the dataset folder")
    return path


# --------------------------------------------------------------------------------------------------
# The sources. Licences are summaries: the dataset card / site linked in the note is authoritative.

HF = "https://huggingface.co/datasets/liuhaotian"
COCO = "http://images.cocodataset.org/zips"  # the COCO mirror serves http only
COCO_LICENSE = "COCO: annotations CC BY 4.0; images under the Flickr terms of use"
GQA = "https://downloads.cs.stanford.edu/nlp/data/gqa"
POPE = "https://raw.githubusercontent.com/AoiDragon/POPE/e3e39262c85a6a83f26cf5094022a782cb0df58d/output/coco"
MMBENCH = "https://download.openmmlab.com/mmclassification/datasets/mmbench"
SCIENCEQA = "https://raw.githubusercontent.com/lupantech/ScienceQA/main/data/scienceqa"
VIZWIZ = "https://vizwiz.cs.colorado.edu/VizWiz_final"
OCR_VQA_JSON = "https://drive.usercontent.google.com/download?id=1r0tyZUwGCc4wIG4RkiglCGNL_nFJjR6Q&export=download&confirm=t"

LCS558K = Dataset(
    name="lcs558k",
    description="LLaVA-Pretrain: 558K LAION/CC/SBU image-caption pairs (BLIP captions) for stage-1 pretraining",
    files=(
        SourceFile(
            "captions", f"{HF}/LLaVA-Pretrain/resolve/main/blip_laion_cc_sbu_558k.json",
            "blip_laion_cc_sbu_558k.json",
            license="see the LLaVA-Pretrain dataset card (CC-3M / LAION / SBU and BLIP terms)",
            note="558K-format conversations; image paths are relative to images/"),
        SourceFile(
            "images", f"{HF}/LLaVA-Pretrain/resolve/main/images.zip", "images.zip", kind="zip",
            extract_to="images",
            license="images from LAION/CC/SBU under their own terms (see the dataset card)",
            note="LLaVA's frozen image snapshot; about 15% of the original URLs are dead, hence the zip"),
    ),
)

MIX665K = Dataset(
    name="mix665k",
    description="LLaVA-1.5 instruction mix (665K conversations) and the five image sources it references",
    files=(
        SourceFile(
            "conversations", f"{HF}/LLaVA-Instruct-150K/resolve/main/llava_v1_5_mix665k.json",
            "llava_v1_5_mix665k.json",
            license="CC BY 4.0; also subject to the OpenAI terms of use (dataset card)",
            note="image paths: coco/train2017, gqa/images, ocr_vqa/images, textvqa/train_images, vg/VG_100K(_2)"),
        SourceFile(
            "coco_train2017", f"{COCO}/train2017.zip", "coco/train2017.zip", kind="zip", extract_to="coco",
            license=COCO_LICENSE, note="contains train2017/", approx_bytes=18 * GB),
        SourceFile(
            "gqa_images", f"{GQA}/images.zip", "gqa/images.zip", kind="zip", extract_to="gqa",
            license="GQA: see https://cs.stanford.edu/people/dorarad/gqa/ (images from Visual Genome)",
            note="contains images/; also the images of the GQA testdev evaluation", approx_bytes=20_300 * MB),
        SourceFile(
            "textvqa_train_val", "https://dl.fbaipublicfiles.com/textvqa/images/train_val_images.zip",
            "textvqa/train_val_images.zip", kind="zip", extract_to="textvqa",
            license="TextVQA: annotations CC BY 4.0; images from Open Images (CC BY 2.0)",
            note="contains train_images/ (train and val images; also the TextVQA evaluation images)",
            approx_bytes=6_600 * MB),
        SourceFile(
            "vg_part1", "https://cs.stanford.edu/people/rak248/VG_100K_2/images.zip", "vg/images.zip",
            kind="zip", extract_to="vg", license="Visual Genome: CC BY 4.0", note="contains VG_100K/",
            approx_bytes=9_200 * MB),
        SourceFile(
            "vg_part2", "https://cs.stanford.edu/people/rak248/VG_100K_2/images2.zip", "vg/images2.zip",
            kind="zip", extract_to="vg", license="Visual Genome: CC BY 4.0", note="contains VG_100K_2/",
            approx_bytes=5_470 * MB),
        SourceFile(
            "ocr_vqa", OCR_VQA_JSON, "ocr_vqa/dataset.json", kind="url_list",
            items_dest="ocr_vqa/images/{id}.jpg", items_url_key="imageURL",
            license="OCR-VQA: see https://ocr-vqa.github.io/ (book covers hosted by Amazon)",
            note=("dataset.json from the OCR-VQA Google Drive folder; each entry's imageURL is fetched to "
                  "ocr_vqa/images/<id>.jpg (LLaVA saves every file as .jpg, so a few hold GIF/PNG bytes). "
                  "Some URLs are dead (LLaVA#1618: 355 missing): they are reported as missing")),
    ),
)

EVAL_LLAVA_BUNDLE = Dataset(
    name="eval_llava_bundle",
    description="LLaVA-1.5's eval.zip: the LLaVA-format question files (llava_*.jsonl) of every benchmark",
    files=(
        SourceFile(
            "eval_zip", None, "eval.zip", kind="zip", extract_to="eval",
            license="LLaVA (Apache-2.0) plus each benchmark's own terms",
            note=("Google Drive, browser-only: open "
                  "https://drive.google.com/file/d/1atZSBBrAX54yYpxtVVW33zFvcnaHeFPy/view (linked from "
                  "LLaVA docs/Evaluation.md), save it as <raw_root>/eval_llava_bundle/eval.zip and re-run; "
                  "nothing rebuilds its LLaVA-format question files (llava_*.jsonl, llava_test_CQM-A.json) from the "
                  "public sources: without it the evaluate stage skips those benchmarks and says why. The benchmark "
                  "adapters read its layout as extracted (MME/, gqa/data/images; components/evaluation/benchmarks)")),
    ),
)

EVAL_VQAV2 = Dataset(
    name="eval_vqav2",
    description="VQAv2 test-dev (server-scored): COCO test2015 images and the official test questions",
    files=(
        SourceFile("test2015_images", f"{COCO}/test2015.zip", "test2015.zip", kind="zip", extract_to=".",
                   license=COCO_LICENSE, note="contains test2015/", approx_bytes=12 * GB),
        SourceFile("test_questions", "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/v2_Questions_Test_mscoco.zip",
                   "v2_Questions_Test_mscoco.zip", kind="zip", extract_to="questions",
                   license="VQA: CC BY 4.0", note="test2015 and test-dev2015 question JSON (no answers: server only)"),
    ),
)

EVAL_GQA = Dataset(
    name="eval_gqa",
    description="GQA testdev-balanced: the official question files (images come with mix665k's gqa/images)",
    files=(
        SourceFile("questions", f"{GQA}/questions1.2.zip", "questions1.2.zip", kind="zip", extract_to="questions",
                   license="GQA: see https://cs.stanford.edu/people/dorarad/gqa/",
                   note="testdev_balanced_questions.json is the one scored", approx_bytes=1_400 * MB),
    ),
    depends_on=("mix665k",),
)

EVAL_VIZWIZ = Dataset(
    name="eval_vizwiz",
    description="VizWiz-VQA test (server-scored): images and annotations",
    files=(
        SourceFile("test_images", f"{VIZWIZ}/images/test.zip", "test.zip", kind="zip", extract_to=".",
                   license="VizWiz: CC BY 4.0", note="contains test/"),
        SourceFile("annotations", f"{VIZWIZ}/vqa_data/Annotations.zip", "Annotations.zip", kind="zip",
                   extract_to="annotations", license="VizWiz: CC BY 4.0", note="test.json (questions only)"),
    ),
)

EVAL_SCIENCEQA = Dataset(
    name="eval_scienceqa",
    description="ScienceQA-IMG test: problems, splits and test images",
    files=(
        SourceFile("problems", f"{SCIENCEQA}/problems.json", "problems.json",
                   license="ScienceQA: CC BY-NC-SA 4.0", note="choices and answer index per pid"),
        SourceFile("pid_splits", f"{SCIENCEQA}/pid_splits.json", "pid_splits.json",
                   license="ScienceQA: CC BY-NC-SA 4.0", note="pid_splits['test'] selects the 4241 test pids"),
        SourceFile("test_images", "https://scienceqa.s3.us-west-1.amazonaws.com/images/test.zip", "images/test.zip",
                   kind="zip", extract_to="images", license="ScienceQA: CC BY-NC-SA 4.0",
                   note="contains test/<pid>/image.png"),
    ),
)

EVAL_TEXTVQA = Dataset(
    name="eval_textvqa",
    description="TextVQA val: annotations (images come with mix665k's textvqa/train_images)",
    files=(
        SourceFile("val_annotations", "https://dl.fbaipublicfiles.com/textvqa/data/TextVQA_0.5.1_val.json",
                   "TextVQA_0.5.1_val.json", license="TextVQA: CC BY 4.0",
                   note="data[]: image_id, question, answers[10]"),
    ),
    depends_on=("mix665k",),
)

EVAL_POPE = Dataset(
    name="eval_pope",
    description="POPE (COCO random / popular / adversarial) at the commit LLaVA used, with COCO val2014 images",
    files=tuple(
        SourceFile(f"pope_{split}", f"{POPE}/coco_pope_{split}.json", f"coco/coco_pope_{split}.json",
                   license="POPE: MIT (repository)", note="jsonl despite the name; pinned to commit e3e3926")
        for split in ("random", "popular", "adversarial")
    ) + (
        SourceFile("val2014_images", f"{COCO}/val2014.zip", "val2014.zip", kind="zip", extract_to=".",
                   license=COCO_LICENSE, note="contains val2014/", approx_bytes=6 * GB),
    ),
)

EVAL_MME = Dataset(
    name="eval_mme",
    description="MME perception/cognition: images and GT (released on request only)",
    files=(
        SourceFile(
            "mme_release", None, "MME_Benchmark_release_version.zip", kind="zip", extract_to=".",
            license="MME: research use, by request to the authors",
            note=("distributed on request: follow "
                  "https://github.com/BradyFU/Awesome-Multimodal-Large-Language-Models/tree/Evaluation, then "
                  "save the release zip as <raw_root>/eval_mme/MME_Benchmark_release_version.zip and re-run")),
    ),
)

EVAL_MMBENCH = Dataset(
    name="eval_mmbench",
    description="MMBench dev (English): the official TSV with base64 images and answers",
    files=(
        SourceFile("dev_en", f"{MMBENCH}/mmbench_dev_20230712.tsv", "mmbench_dev_20230712.tsv",
                   license="MMBench: see https://github.com/open-compass/MMBench",
                   note="4377 rows, circular passes have index k*1e6+q"),
    ),
)

EVAL_MMBENCH_CN = Dataset(
    name="eval_mmbench_cn",
    description="MMBench-CN dev: the official TSV with base64 images and answers",
    files=(
        SourceFile("dev_cn", f"{MMBENCH}/mmbench_dev_cn_20231003.tsv", "mmbench_dev_cn_20231003.tsv",
                   license="MMBench: see https://github.com/open-compass/MMBench", note="Chinese dev split"),
    ),
)

TRAIN_DATASETS: tuple[str, ...] = ("lcs558k", "mix665k")
EVAL_DATASETS: tuple[str, ...] = (
    "eval_llava_bundle", "eval_vqav2", "eval_gqa", "eval_vizwiz", "eval_scienceqa", "eval_textvqa", "eval_pope",
    "eval_mme", "eval_mmbench", "eval_mmbench_cn",
)

CATALOG: dict[str, Dataset] = {
    d.name: d
    for d in (LCS558K, MIX665K, EVAL_LLAVA_BUNDLE, EVAL_VQAV2, EVAL_GQA, EVAL_VIZWIZ, EVAL_SCIENCEQA, EVAL_TEXTVQA,
              EVAL_POPE, EVAL_MME, EVAL_MMBENCH, EVAL_MMBENCH_CN)
}


def get_dataset(name: str) -> Dataset:
    """The catalog entry for `name`, with the known names in the error (a typo in params fails early)."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(CATALOG)}") from None


def with_dependencies(names: list[str] | tuple[str, ...]) -> list[str]:
    """`names` plus the datasets they depend on (dependencies first), each once, unknown names rejected."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        for dep in get_dataset(name).depends_on:
            visit(dep)
        if name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


@dataclass(frozen=True)
class AnnotationSet:
    """A training annotation file and the folder its image paths are relative to, both under data/raw."""

    name: str  # pretrain | finetune: the training stage that reads it
    annotations: str
    image_root: str


# Where each data.source puts the two training sets (the embedded dataset mirrors the real layout).
TRAINING_SETS: dict[str, tuple[AnnotationSet, ...]] = {
    "hub": (
        AnnotationSet("pretrain", "lcs558k/blip_laion_cc_sbu_558k.json", "lcs558k/images"),
        AnnotationSet("finetune", "mix665k/llava_v1_5_mix665k.json", "mix665k"),
    ),
    "synthetic": (
        AnnotationSet("pretrain", "synthetic/llava_pretrain/blip_laion_cc_sbu_558k.json",
                      "synthetic/llava_pretrain/images"),
        AnnotationSet("finetune", "synthetic/llava_v1_5_mix665k.json", "synthetic"),
    ),
}
