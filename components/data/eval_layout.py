"""The hub benchmarks as one LLaVA `playground/data/eval` folder: `<raw>/eval_hub/`, made of relative symlinks.

The download (`data.source: hub`) puts each benchmark's files in its own catalog folder (eval_pope/, eval_gqa/,
the question files in eval_llava_bundle/eval, GQA and TextVQA images in mix665k/); the adapters
(components/evaluation/benchmarks) read one root in LLaVA's layout, where docs/Evaluation.md has users place those
files by hand. `build_hub_eval_root(raw)` does that placing with links, never copies (the images are GBs):

    <raw>/eval_hub/textvqa/train_images -> ../../mix665k/textvqa/train_images

`HUB_LINKS` is the one table of which file lands where. A link whose source is absent is not made: it is
reported, and written to `<raw>/eval_hub/missing_sources.json` so the evaluation's skip reason says what to place
where (`missing_hints`). The folder is owned by this module: every build removes the previous links first, so a
rerun replaces stale ones; a real file found in it is an error, never deleted.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import get_dataset

HUB_EVAL_DIR = "eval_hub"
MISSING_FILE = "missing_sources.json"
BUNDLE = "eval_llava_bundle"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Link:
    """`<eval_hub>/<dest>` -> `<raw>/<source>`: `source` is relative to the raw root; `catalog` names the
    (dataset, file) that provides it, so a missing source is reported with how to get it."""

    dest: str
    sources: tuple[str, ...]  # the first that exists is linked (eval.zip's two possible top levels)
    catalog: tuple[str, str]


def bundle(rel: str) -> Link:
    """A question file of LLaVA's eval.zip. It is extracted into eval_llava_bundle/eval; an archive whose members
    start with `eval/` (as `unzip eval.zip -d playground/data` expects) lands one level deeper, so both are read."""
    return Link(rel, (f"{BUNDLE}/eval/{rel}", f"{BUNDLE}/eval/eval/{rel}"), (BUNDLE, "eval_zip"))


def fetched(dest: str, source: str, dataset: str, file: str) -> Link:
    return Link(dest, (source,), (dataset, file))


# benchmark (an adapter's name) -> its links, in LLaVA's docs/Evaluation.md layout (which the adapters read).
HUB_LINKS: dict[str, tuple[Link, ...]] = {
    "textvqa": (
        bundle("textvqa/llava_textvqa_val_v051_ocr.jsonl"),
        fetched("textvqa/TextVQA_0.5.1_val.json", "eval_textvqa/TextVQA_0.5.1_val.json", "eval_textvqa",
                "val_annotations"),
        fetched("textvqa/train_images", "mix665k/textvqa/train_images", "mix665k", "textvqa_train_val"),
    ),
    "pope": (
        bundle("pope/llava_pope_test.jsonl"),
        *(fetched(f"pope/coco/coco_pope_{split}.json", f"eval_pope/coco/coco_pope_{split}.json", "eval_pope",
                  f"pope_{split}") for split in ("adversarial", "popular", "random")),
        fetched("pope/val2014", "eval_pope/val2014", "eval_pope", "val2014_images"),
    ),
    "gqa": (
        bundle("gqa/llava_gqa_testdev_balanced.jsonl"),
        fetched("gqa/data/testdev_balanced_questions.json", "eval_gqa/questions/testdev_balanced_questions.json",
                "eval_gqa", "questions"),
        fetched("gqa/data/images", "mix665k/gqa/images", "mix665k", "gqa_images"),
    ),
    "mme": (
        bundle("MME/llava_mme.jsonl"),
        fetched("MME/MME_Benchmark_release_version", "eval_mme/MME_Benchmark_release_version", "eval_mme",
                "mme_release"),
    ),
    "scienceqa": (
        bundle("scienceqa/llava_test_CQM-A.json"),
        fetched("scienceqa/problems.json", "eval_scienceqa/problems.json", "eval_scienceqa", "problems"),
        fetched("scienceqa/pid_splits.json", "eval_scienceqa/pid_splits.json", "eval_scienceqa", "pid_splits"),
        fetched("scienceqa/images/test", "eval_scienceqa/images/test", "eval_scienceqa", "test_images"),
    ),
    "mmbench": (
        fetched("mmbench/mmbench_dev_20230712.tsv", "eval_mmbench/mmbench_dev_20230712.tsv", "eval_mmbench",
                "dev_en"),
    ),
    # docs/Evaluation.md puts the CN TSV under mmbench/ too (the adapter reads mmbench/ first)
    "mmbench_cn": (
        fetched("mmbench/mmbench_dev_cn_20231003.tsv", "eval_mmbench_cn/mmbench_dev_cn_20231003.tsv",
                "eval_mmbench_cn", "dev_cn"),
    ),
    "vqav2": (
        bundle("vqav2/llava_vqav2_mscoco_test-dev2015.jsonl"),
        bundle("vqav2/llava_vqav2_mscoco_test2015.jsonl"),
        fetched("vqav2/test2015", "eval_vqav2/test2015", "eval_vqav2", "test2015_images"),
    ),
    "vizwiz": (
        bundle("vizwiz/llava_test.jsonl"),
        fetched("vizwiz/test", "eval_vizwiz/test", "eval_vizwiz", "test_images"),
    ),
}


@dataclass(frozen=True)
class Missing:
    benchmark: str
    dest: str
    source: str  # where the download puts it (the first candidate), relative to the raw root
    how: str  # what to place where

    def line(self) -> str:
        return f"{self.dest} <- {self.source}: {self.how}"


@dataclass(frozen=True)
class HubEvalRoot:
    root: Path
    linked: int
    missing: list[Missing] = field(default_factory=list)

    def summary(self) -> str:
        head = f"{self.root}: {self.linked} links"
        if not self.missing:
            return head + ", every benchmark source present"
        return "\n  ".join([f"{head}; {len(self.missing)} sources absent (not linked):"]
                           + [f"{m.benchmark}: {m.line()}" for m in self.missing])


def how_to_get(link: Link, raw: Path) -> str:
    """The catalog's word on the source: its note when no program can fetch it, else a pointer to the download."""
    dataset, name = link.catalog
    source = get_dataset(dataset).file(name)
    where = raw / dataset / source.dest
    if source.url is None:
        return f"not downloadable by a program; place it at {where}: {source.note}"
    return (f"fetched by the download stage to {where} (from {source.url}); it is absent: rerun `dvc repro download` "
            f"and see data/raw/manifest.parquet's status/error for why")


def clear_links(root: Path) -> None:
    """Remove the previous build's links, its missing-sources file and the folders they leave empty; a real file
    (not ours) stops the build instead of being deleted."""
    if not root.exists():
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        here = Path(dirpath)
        for name in filenames + dirnames:
            path = here / name
            if path.is_symlink() or (here == root and name == MISSING_FILE):
                path.unlink()
            elif path.is_dir():
                path.rmdir()  # bottom-up: its links are gone by now, and a real file would have raised
            else:
                raise FileExistsError(f"{path} is not a link: {root} is rebuilt from the downloads on every "
                                      f"evaluation; move the file to where the catalog downloads it "
                                      f"(components/data/eval_layout.py HUB_LINKS) or use `eval.root`")


def build_hub_eval_root(raw: str | Path) -> HubEvalRoot:
    """Build `<raw>/eval_hub/` from what the download left under `<raw>`: one relative link per HUB_LINKS entry whose
    source exists, one folder per benchmark (so a skip reason names the absent file), and `missing_sources.json`."""
    raw = Path(raw)
    root = raw / HUB_EVAL_DIR
    clear_links(root)
    linked, missing = 0, []
    for benchmark, links in HUB_LINKS.items():
        for link in links:
            dest = root / link.dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = next((raw / s for s in link.sources if (raw / s).exists()), None)
            if source is None:
                missing.append(Missing(benchmark, link.dest, link.sources[0], how_to_get(link, raw)))
                continue
            # relative to the link's folder, so data/raw can move (or be a mount) without breaking the links
            dest.symlink_to(os.path.relpath(source, dest.parent), target_is_directory=source.is_dir())
            linked += 1
    hints: dict[str, list[str]] = {}
    for m in missing:
        hints.setdefault(m.benchmark, []).append(m.line())
    (root / MISSING_FILE).write_text(json.dumps(hints, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    built = HubEvalRoot(root, linked, missing)
    # a warning reaches stderr without any logging setup: absent benchmark sources are never silent
    (log.warning if missing else log.info)(built.summary())
    return built


def missing_hints(eval_root: str | Path, benchmark: str) -> list[str]:
    """What the last build could not link for `benchmark` ([] for any other root, e.g. a user's `eval.root`)."""
    path = Path(eval_root) / MISSING_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get(benchmark, [])
