"""The hub eval root (components/data/eval_layout.py): a raw tree laid out as the `hub` download leaves it (tiny
files in the real formats) -> data/raw/eval_hub -> the adapters find every benchmark's questions, images and
annotations; what cannot be downloaded (MME) is skipped with what to place where; rebuilds replace stale links."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from components.config import ConfigError, load_params
from components.data.eval_layout import HUB_EVAL_DIR, HUB_LINKS, MISSING_FILE, build_hub_eval_root
from components.evaluation.benchmarks import ADAPTERS, BenchmarkMissing, benchmark_root, load_benchmark
from components.evaluation.exported_model import EVAL_ROOTS, given_eval_root, stage_eval_root

SHORT = "Answer the question using a single word or phrase."
LOCAL = ("textvqa", "pope", "gqa", "mme", "scienceqa", "mmbench", "mmbench_cn")  # scored here (baseline works)


def image(path: Path, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (200, 30, 30)).save(path, fmt)


def write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, list) and (path.suffix == ".jsonl" or path.name.startswith("coco_pope_")):
        content = "".join(json.dumps(row) + "\n" for row in content)  # POPE's .json files are jsonl
    elif not isinstance(content, str):
        content = json.dumps(content)
    path.write_text(content, encoding="utf-8")


def mmbench_tsv(path: Path, question: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6)).save(buf, "JPEG")
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    rows = [{"index": k * 1_000_000, "question": question, "hint": "", "A": "x", "B": "y", "C": "z", "D": "w",
             "answer": "ABCD"[k], "category": "ocr", "image": encoded, "l2-category": "fine", "split": "dev"}
            for k in range(2)]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write(path, out.getvalue())


def bundle_files(bundle: Path) -> None:
    """LLaVA's eval.zip question files, as extracted into eval_llava_bundle/eval (2-3 lines each)."""
    write(bundle / "textvqa/llava_textvqa_val_v051_ocr.jsonl", [
        {"question_id": 1, "image": "t1.jpg", "text": f"what is written?\nReference OCR token: stop\n{SHORT}"},
        {"question_id": 2, "image": "t2.jpg", "text": f"what brand?\nReference OCR token: acme\n{SHORT}"}])
    write(bundle / "pope/llava_pope_test.jsonl", [
        {"question_id": i + 1, "image": "COCO_val2014_000000000001.jpg", "text": f"Is there a dog?\n{SHORT}",
         "category": cat} for i, cat in enumerate(("adversarial", "popular", "random"))])
    write(bundle / "gqa/llava_gqa_testdev_balanced.jsonl", [
        {"question_id": "201", "image": "n1.jpg", "text": f"What color is it?\n{SHORT}", "category": "default"},
        {"question_id": "202", "image": "n1.jpg", "text": f"Is it red?\n{SHORT}", "category": "default"}])
    write(bundle / "MME/llava_mme.jsonl", [
        {"question_id": "color/1.jpg", "image": "color/1.jpg", "text": f"Is it red?\n{SHORT}", "category": "color"},
        {"question_id": "color/1.jpg", "image": "color/1.jpg", "text": f"Is it blue?\n{SHORT}", "category": "color"}])
    write(bundle / "scienceqa/llava_test_CQM-A.json", [
        {"id": "5", "image": "5/image.png", "conversations": [
            {"from": "human", "value": "<image>\nWhich is red?\nA. sign\nB. sky"}, {"from": "gpt", "value": "A"}]},
        {"id": "6", "conversations": [
            {"from": "human", "value": "Which word is a color?\nA. table\nB. red"}, {"from": "gpt", "value": "B"}]}])
    write(bundle / "vqav2/llava_vqav2_mscoco_test-dev2015.jsonl", [
        {"question_id": 11, "image": "COCO_test2015_000000000001.jpg", "text": f"What is it?\n{SHORT}",
         "category": "default"}])
    write(bundle / "vqav2/llava_vqav2_mscoco_test2015.jsonl", [
        {"question_id": 11, "image": "COCO_test2015_000000000001.jpg", "text": f"What is it?\n{SHORT}"},
        {"question_id": 12, "image": "COCO_test2015_000000000001.jpg", "text": f"Where is it?\n{SHORT}"}])
    write(bundle / "vizwiz/llava_test.jsonl", [
        {"question_id": 0, "image": "VizWiz_test_00000000.jpg", "text": f"What is this?\n{SHORT}"}])
    write(bundle / "vizwiz/answers/llava-v1.5-13b.jsonl", "")  # eval.zip's other content is not linked


def hub_download(raw: Path, mme: bool = True, bundle_top: str = "eval") -> Path:
    """`raw` as `download_all` leaves it for data.source hub (archives extracted beside themselves)."""
    bundle_files(raw / "eval_llava_bundle" / bundle_top)
    image(raw / "mix665k/textvqa/train_images/t1.jpg")
    image(raw / "mix665k/textvqa/train_images/t2.jpg")
    write(raw / "eval_textvqa/TextVQA_0.5.1_val.json", {"data": [
        {"image_id": 1, "question": "What is written?", "answers": ["stop"] * 10},
        {"image_id": 2, "question": "What brand?", "answers": ["acme"] * 10}]})
    image(raw / "eval_pope/val2014/COCO_val2014_000000000001.jpg")
    for i, cat in enumerate(("adversarial", "popular", "random")):
        write(raw / f"eval_pope/coco/coco_pope_{cat}.json", [
            {"question_id": i + 1, "image": "COCO_val2014_000000000001.jpg", "text": "Is there a dog?",
             "label": "yes"}])
    image(raw / "mix665k/gqa/images/n1.jpg")
    write(raw / "eval_gqa/questions/testdev_balanced_questions.json", {
        "201": {"answer": "red", "isBalanced": True}, "202": {"answer": "yes", "isBalanced": True}})
    write(raw / "eval_scienceqa/problems.json", {
        "5": {"question": "Which is red?", "choices": ["sign", "sky"], "answer": 0},
        "6": {"question": "Which word is a color?", "choices": ["table", "red"], "answer": 1}})
    write(raw / "eval_scienceqa/pid_splits.json", {"train": [], "val": [], "test": ["5", "6"]})
    image(raw / "eval_scienceqa/images/test/5/image.png", "PNG")
    mmbench_tsv(raw / "eval_mmbench/mmbench_dev_20230712.tsv", "Which letter?")
    mmbench_tsv(raw / "eval_mmbench_cn/mmbench_dev_cn_20231003.tsv", "哪个字母？")
    image(raw / "eval_vqav2/test2015/COCO_test2015_000000000001.jpg")
    image(raw / "eval_vizwiz/test/VizWiz_test_00000000.jpg")
    if mme:  # by request only: a user who has it saved the zip, and the download extracted it
        release = raw / "eval_mme/MME_Benchmark_release_version/color"
        image(release / "1.jpg")
        write(release / "1.txt", "Is it red? Please answer yes or no.\tYes\nIs it blue? Please answer yes or no.\tNo\n")
    return raw


def links(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): os.readlink(p) for p in sorted(root.rglob("*")) if p.is_symlink()}


def assert_no_broken_link(root: Path) -> None:
    broken = [str(p) for p in root.rglob("*") if p.is_symlink() and not p.exists()]
    assert not broken, broken


def test_hub_download_becomes_a_complete_llava_eval_root(tmp_path):
    raw = hub_download(tmp_path / "raw")
    built = build_hub_eval_root(raw)
    assert built.root == raw / HUB_EVAL_DIR and built.missing == []
    assert built.linked == sum(len(v) for v in HUB_LINKS.values())
    assert json.loads((built.root / MISSING_FILE).read_text()) == {}
    for rel, target in links(built.root).items():
        assert not os.path.isabs(target), (rel, target)  # relative: data/raw may move or be a mount
    assert_no_broken_link(built.root)
    assert set(HUB_LINKS) == set(ADAPTERS)
    for name in ADAPTERS:
        questions = load_benchmark(name, built.root)
        assert questions, name
        for q in questions:
            if isinstance(q.image, Path):
                assert q.image.is_file(), (name, q.image)
        if name in LOCAL:  # the annotations are reachable too: the trivial baseline reads them
            assert "score" in ADAPTERS[name].baseline(questions, benchmark_root(name, built.root))
    assert benchmark_root("mme", built.root).name == "MME"  # LLaVA's layout, as docs/Evaluation.md
    assert (built.root / "gqa/data/images").is_symlink()
    assert not (built.root / "vizwiz/answers").exists()  # only what the adapters read is linked


def test_mme_by_request_only_is_skipped_saying_what_to_place_where(tmp_path):
    raw = hub_download(tmp_path / "raw", mme=False)
    built = build_hub_eval_root(raw)
    assert [(m.benchmark, m.dest) for m in built.missing] == [("mme", "MME/MME_Benchmark_release_version")]
    assert not (built.root / "MME/MME_Benchmark_release_version").is_symlink()  # never a broken link
    with pytest.raises(BenchmarkMissing) as err:
        load_benchmark("mme", built.root)
    assert "MME_Benchmark_release_version" in err.value.reason
    assert "eval_mme/MME_Benchmark_release_version.zip" in err.value.reason  # the catalog's how-to
    assert "distributed on request" in err.value.reason
    assert load_benchmark("pope", built.root)  # the others are unaffected


def test_without_eval_zip_the_skip_reason_names_the_bundle(tmp_path):
    raw = hub_download(tmp_path / "raw")
    for path in sorted((raw / "eval_llava_bundle").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    built = build_hub_eval_root(raw)
    assert {m.benchmark for m in built.missing} == set(ADAPTERS) - {"mmbench", "mmbench_cn"}
    with pytest.raises(BenchmarkMissing) as err:
        load_benchmark("textvqa", built.root)
    assert "llava_textvqa_val_v051_ocr.jsonl" in err.value.reason and "eval_llava_bundle/eval.zip" in err.value.reason
    assert load_benchmark("mmbench", built.root) and load_benchmark("mmbench_cn", built.root)


def test_eval_zip_with_a_top_level_eval_folder_is_read_too(tmp_path):
    raw = hub_download(tmp_path / "raw", bundle_top="eval/eval")
    built = build_hub_eval_root(raw)
    assert built.missing == []
    assert len(load_benchmark("gqa", built.root)) == 2


def test_missing_source_is_reported_not_linked(tmp_path):
    raw = hub_download(tmp_path / "raw")
    (raw / "eval_textvqa/TextVQA_0.5.1_val.json").unlink()
    built = build_hub_eval_root(raw)
    (missing,) = built.missing
    assert (missing.benchmark, missing.dest) == ("textvqa", "textvqa/TextVQA_0.5.1_val.json")
    assert "dvc repro download" in missing.how and "manifest.parquet" in missing.how
    assert "textvqa/TextVQA_0.5.1_val.json" in built.summary()
    assert not (built.root / missing.dest).is_symlink()
    assert_no_broken_link(built.root)
    assert json.loads((built.root / MISSING_FILE).read_text()) == {"textvqa": [missing.line()]}
    assert load_benchmark("textvqa", built.root)  # questions and images load; scoring says what is missing
    with pytest.raises(BenchmarkMissing, match="TextVQA_0.5.1_val.json"):
        ADAPTERS["textvqa"].score([], {}, benchmark_root("textvqa", built.root))


def test_rebuild_is_idempotent_and_replaces_stale_links(tmp_path):
    raw = hub_download(tmp_path / "raw")
    first = links(build_hub_eval_root(raw).root)
    assert links(build_hub_eval_root(raw).root) == first
    # a source gone since the last build, and a stray link: both disappear, the first reported
    for path in sorted((raw / "eval_vizwiz/test").rglob("*")):
        path.unlink()
    (raw / "eval_vizwiz/test").rmdir()
    (raw / HUB_EVAL_DIR / "pope/old_link").symlink_to("../../nowhere")
    built = build_hub_eval_root(raw)
    assert [m.dest for m in built.missing] == ["vizwiz/test"]
    assert links(built.root) == {k: v for k, v in first.items() if k != "vizwiz/test"}
    assert_no_broken_link(built.root)


def test_a_real_file_in_the_hub_root_stops_the_build_and_is_kept(tmp_path):
    raw = hub_download(tmp_path / "raw")
    build_hub_eval_root(raw)
    placed = raw / HUB_EVAL_DIR / "MME/notes.txt"
    placed.write_text("mine")
    with pytest.raises(FileExistsError, match="not a link"):
        build_hub_eval_root(raw)
    assert placed.read_text() == "mine"


def test_stage_eval_root_by_source_and_by_eval_root(tmp_path):
    params = load_params("params.yaml")
    assert stage_eval_root(params) == EVAL_ROOTS["synthetic"] == "data/raw/synthetic/eval"  # embedded: unchanged
    hub = dataclasses.replace(params, data=dataclasses.replace(params.data, source="hub"))
    raw = hub_download(tmp_path / "raw")
    assert stage_eval_root(hub, raw=str(raw)) == str(raw / HUB_EVAL_DIR)
    assert load_benchmark("pope", raw / HUB_EVAL_DIR)
    assert EVAL_ROOTS["hub"] == f"data/raw/{HUB_EVAL_DIR}"
    # eval.root: the user's own LLaVA folder, read as is (here the built one), whatever data.source says
    mine = dataclasses.replace(hub, eval=dataclasses.replace(hub.eval, root=str(raw / HUB_EVAL_DIR)))
    assert stage_eval_root(mine, raw=str(tmp_path / "elsewhere")) == str(raw / HUB_EVAL_DIR)
    assert not (tmp_path / "elsewhere").exists()  # nothing built
    with pytest.raises(FileNotFoundError, match="eval.root"):
        given_eval_root(str(tmp_path / "absent"))


def test_eval_root_param_is_validated():
    params = load_params("params.yaml")
    assert params.eval.root == ""
    with pytest.raises(ConfigError, match="root"):
        dataclasses.replace(params.eval, root=" playground/data/eval")
