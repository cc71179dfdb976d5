"""Benchmark adapters on the embedded benchmark files (built small in tmp) and the VQAv2/VizWiz submission writers."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from components.data.conversation import LETTER_ANSWER, SHORT_ANSWER
from components.data.synthetic import DatasetWriter, SyntheticSpec
from components.data.synthetic_eval import write_benchmarks
from components.evaluation.benchmarks import (
    ADAPTERS,
    BenchmarkMissing,
    IncompletePredictions,
    benchmark_root,
    load_benchmark,
    vizwiz_submission,
    vqav2_submission,
    write_vizwiz_submission,
    write_vqav2_submission,
)
from components.evaluation.benchmarks.common import LETTER_SUFFIX_CN

ALL = ("textvqa", "pope", "gqa", "mme", "scienceqa", "mmbench", "mmbench_cn")


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_benchmarks(DatasetWriter(out), SyntheticSpec(eval_scenes=3))
    return out / "eval"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def oracle(name: str, root: Path, questions) -> dict:
    """The gold answer of every question, read from the benchmark's own annotation files."""
    if name == "textvqa":
        data = json.loads((root / "TextVQA_0.5.1_val.json").read_text())["data"]
        return {q.question_id: a["answers"][0] for q in questions for a in data if a["image_id"] == q.question_id}
    if name == "pope":
        labels = {r["question_id"]: r["label"] for f in (root / "coco").iterdir() for r in _jsonl(f)}
        return {q.question_id: labels[q.question_id].capitalize() for q in questions}
    if name == "gqa":
        ann = json.loads((root / "testdev_balanced_questions.json").read_text())
        return {q.question_id: ann[q.question_id]["answer"].capitalize() + "." for q in questions}
    if name == "mme":
        out = {}
        for q in questions:  # pairs: (yes, no) consecutive, so the GT file's lines follow question order
            task, _, file = q.question_id.partition("/")
            lines = (root / "MME_Benchmark_release_version" / task / "questions_answers_YN"
                     / (Path(file).stem + ".txt")).read_text().splitlines()
            stem = q.prompt_text.replace("\n" + SHORT_ANSWER, "")
            out[q.uid] = next(line.split("\t")[1] for line in lines if line.startswith(stem))
        return out
    if name == "scienceqa":
        problems = json.loads((root / "problems.json").read_text())
        return {q.question_id: "ABCDE"[problems[q.question_id]["answer"]] for q in questions}
    return {q.question_id: q.metadata["answer"] for q in questions}


@pytest.mark.parametrize("name", ALL)
def test_oracle_predictions_score_full_marks(eval_root, name):
    adapter = ADAPTERS[name]
    root = benchmark_root(name, eval_root)
    questions = adapter.questions(root)
    assert questions and len({q.uid for q in questions}) == len(questions)
    result = adapter.score(questions, oracle(name, root, questions), root)
    full = 600.0 if name == "mme" else 100.0
    assert result["headline"] == pytest.approx(full), result
    assert constant_answer_score(adapter, questions, root) < full


def constant_answer_score(adapter, questions, root) -> float:
    """A constant answer must score below the oracle (the adapter really compares something)."""
    const = {q.uid: "A" if adapter.name in ("scienceqa", "mmbench", "mmbench_cn") else "yes" for q in questions}
    return adapter.score(questions, const, root)["headline"]


def test_prompts_carry_the_reference_suffixes(eval_root):
    qs = {name: load_benchmark(name, eval_root) for name in ALL}
    for name in ("textvqa", "pope", "gqa", "mme"):
        assert all(q.prompt_text.endswith("\n" + SHORT_ANSWER) for q in qs[name])
        assert all(q.max_new_tokens == 128 for q in qs[name])
    assert all(len(q.prompt_text.split("\n")) == 3 for q in qs["textvqa"])
    assert all("\nReference OCR token: " in q.prompt_text for q in qs["textvqa"])
    sqa = qs["scienceqa"]
    assert all(q.prompt_text.endswith("\n" + LETTER_ANSWER) and "<image>" not in q.prompt_text for q in sqa)
    assert sqa[0].prompt_text.startswith("Context: ") and sqa[-1].image is None and sqa[0].image.exists()
    assert [q.metadata["is_multimodal"] for q in sqa] == [True] * 3 + [False]
    en, cn = qs["mmbench"][0], qs["mmbench_cn"][0]
    assert en.prompt_text.endswith("\nD. " + en.metadata["D"] + "\n" + LETTER_ANSWER)
    assert cn.prompt_text.endswith("\n" + LETTER_SUFFIX_CN) and isinstance(en.image, Image.Image)
    assert en.max_new_tokens == 1024 and en.metadata["answer_fields"]["option_char"] == list("ABCD")
    assert all(Path(q.image).exists() for name in ("textvqa", "pope", "gqa", "mme") for q in qs[name])


def test_num_beams_default_is_greedy_and_an_override_is_applied(eval_root):
    for name, beams in {"textvqa": 3, "gqa": 3, "scienceqa": 3, "mme": 5, "pope": 1, "mmbench": 1}.items():
        assert load_benchmark(name, eval_root)[0].num_beams == 1
        q = load_benchmark(name, eval_root, num_beams=beams)[0]
        assert q.num_beams == beams and q.metadata["num_beams"] == beams


def test_pope_scores_per_category_in_question_order(eval_root):
    adapter, root = ADAPTERS["pope"], benchmark_root("pope", eval_root)
    questions = adapter.questions(root)
    gold = oracle("pope", root, questions)
    flipped = next(q for q in questions if q.metadata["category"] == "random" and gold[q.question_id] == "Yes")
    result = adapter.score(questions, {**gold, flipped.question_id: "No"}, root)
    assert result["per_category"]["adversarial"]["f1"] == 1.0 and result["per_category"]["popular"]["f1"] == 1.0
    assert result["per_category"]["random"]["FN"] == 1 and result["mean_f1"] < 100.0
    with pytest.raises(IncompletePredictions):
        adapter.score(questions, dict(list(gold.items())[1:]), root)


def test_mme_pairs_and_totals(eval_root):
    """MME ids repeat (two questions per image path): predictions are keyed by uid "<path>#<k>"."""
    adapter, root = ADAPTERS["mme"], benchmark_root("mme", eval_root)
    questions = adapter.questions(root)
    assert questions[0].question_id == questions[1].question_id == "OCR/images/000000.jpg"
    assert [q.uid for q in questions[:2]] == ["OCR/images/000000.jpg#0", "OCR/images/000000.jpg#1"]
    gold = oracle("mme", root, questions)
    result = adapter.score(questions, {**gold, questions[0].uid: "No"}, root)  # OCR: acc 5/6, acc+ 2/3
    assert result["per_task"]["OCR"]["score"] == pytest.approx(100 * 5 / 6 + 100 * 2 / 3)
    assert result["perception_total"] == pytest.approx(400 + 100 * 5 / 6 + 100 * 2 / 3)
    assert result["cognition_total"] == 0 and set(result["per_task"]) == {"OCR", "color", "existence"}


def test_mmbench_is_circular(eval_root):
    adapter, root = ADAPTERS["mmbench"], benchmark_root("mmbench", eval_root)
    questions = adapter.questions(root)
    assert len(questions) == 12 and sorted({q.question_id % 1_000_000 for q in questions}) == [0, 1, 2]
    gold = {q.question_id: q.metadata["answer"] for q in questions}
    main_only = {k: (v if k >= 1_000_000 else "B" if v == "A" else "A") for k, v in gold.items()}
    result = adapter.score(questions, {k: v for k, v in gold.items()}, root)
    assert result["circular_accuracy"] == 100.0
    assert adapter.score(questions, main_only, root)["circular_accuracy"] == 0.0


def test_scienceqa_missing_prediction_drops_out_of_img(eval_root):
    adapter, root = ADAPTERS["scienceqa"], benchmark_root("scienceqa", eval_root)
    questions = adapter.questions(root)
    gold = oracle("scienceqa", root, questions)
    result = adapter.score(questions, {**{k: v for k, v in list(gold.items())[1:]}}, root)
    assert result["img_total"] == 2 and result["img_accuracy"] == 100.0 and result["missing"] == 1
    assert result["accuracy"] == pytest.approx(300 / 4)
    wrong = adapter.score(questions, {**gold, questions[0].question_id: "A."}, root)  # "A." is FAILED in LLaVA
    assert wrong["img_correct"] == 2


@pytest.mark.parametrize("name", ALL)
def test_missing_benchmark_is_reported_not_zero(tmp_path, eval_root, name):
    with pytest.raises(BenchmarkMissing, match="does not exist"):
        load_benchmark(name, tmp_path / "nowhere")
    copy = tmp_path / "eval"
    shutil.copytree(benchmark_root(name, eval_root), copy / ADAPTERS[name].folder)
    main_file = {"textvqa": "llava_textvqa_val_v051_ocr.jsonl", "pope": "llava_pope_test.jsonl",
                 "gqa": "llava_gqa_testdev_balanced.jsonl", "mme": "llava_mme.jsonl",
                 "scienceqa": "llava_test_CQM-A.json", "mmbench": "mmbench_dev_20230712.tsv",
                 "mmbench_cn": "mmbench_dev_cn_20231003.tsv"}[name]
    (copy / ADAPTERS[name].folder / main_file).unlink()
    with pytest.raises(BenchmarkMissing) as err:
        load_benchmark(name, copy)
    assert main_file in err.value.reason and err.value.benchmark == name


def test_missing_annotations_raise_benchmark_missing(tmp_path, eval_root):
    shutil.copytree(benchmark_root("gqa", eval_root), tmp_path / "gqa")
    questions = ADAPTERS["gqa"].questions(tmp_path / "gqa")
    (tmp_path / "gqa" / "testdev_balanced_questions.json").unlink()
    with pytest.raises(BenchmarkMissing, match="testdev_balanced_questions.json"):
        ADAPTERS["gqa"].score(questions, {q.question_id: "x" for q in questions}, tmp_path / "gqa")


def test_vqav2_submission_covers_full_test_split(tmp_path):
    test2015 = [{"question_id": 1, "image": "COCO_test2015_1.jpg"}, {"question_id": 2, "image": "COCO_test2015_2.jpg"},
                {"question_id": 3, "image": "COCO_test2015_3.jpg"}]
    answers = {1: "Two", 3: "The Dog."}
    assert vqav2_submission(answers, test2015) == [{"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": ""},
                                                   {"question_id": 3, "answer": "dog"}]
    src, split, dst = tmp_path / "merge.jsonl", tmp_path / "test2015.jsonl", tmp_path / "up" / "vqav2.json"
    src.write_text('{"question_id": 1, "text": "Two"}\nnot json\n{"question_id": 3, "text": "The Dog."}\n')
    split.write_text("".join(json.dumps(q) + "\n" for q in test2015))
    stats = write_vqav2_submission(src, split, dst)
    assert stats == {"total_results": 2, "total_split": 3, "error_line": 1}
    assert json.loads(dst.read_text())[1] == {"question_id": 2, "answer": ""}


def test_vizwiz_submission_requires_every_answer(tmp_path):
    test = [{"question_id": i, "image": f"VizWiz_test_{i:08d}.jpg"} for i in range(2)]
    rows = vizwiz_submission({0: "Unanswerable", 1: "a T-shirt"}, test)
    assert rows == [{"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
                    {"image": "VizWiz_test_00000001.jpg", "answer": "t shirt"}]
    with pytest.raises(ValueError, match="no answer"):
        vizwiz_submission({0: "x"}, test)
    src, split, dst = tmp_path / "a.jsonl", tmp_path / "q.jsonl", tmp_path / "vizwiz.json"
    src.write_text('{"question_id": 0, "text": "yes"}\n{"question_id": 1, "text": "No."}\n')
    split.write_text("".join(json.dumps(q) + "\n" for q in test))
    write_vizwiz_submission(src, split, dst)
    assert [r["answer"] for r in json.loads(dst.read_text())] == ["yes", "no"]
