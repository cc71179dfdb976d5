"""Trivial baselines and unparseable shares on the embedded benchmark files (built small in tmp).

Every expected baseline is recomputed here from the benchmark's own files without the adapters: the label balance
for POPE, the yes/no pairs for MME, the answer counts for GQA/TextVQA, the option counts for ScienceQA/MMBench.
"""

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from components.data.synthetic import DatasetWriter, SyntheticSpec
from components.data.synthetic_eval import write_benchmarks
from components.evaluation import scoring
from components.evaluation.benchmarks import ADAPTERS, benchmark_root, load_benchmark, read_mmbench_tsv
from components.evaluation.report import build_metrics, write_reports
from components.evaluation.runner import predictions

SCORED = ("textvqa", "pope", "gqa", "mme", "scienceqa", "mmbench", "mmbench_cn")
GIBBERISH = "jeden ouv jú reports rawEndnellcharacter tuvoModule"


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_benchmarks(DatasetWriter(out), SyntheticSpec(eval_scenes=4))
    return out / "eval"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _baseline(name: str, eval_root: Path) -> dict:
    return ADAPTERS[name].baseline(load_benchmark(name, eval_root), benchmark_root(name, eval_root))


def _score(name: str, eval_root: Path, answer) -> dict:
    """The adapter's scores when question i is answered ``answer(i)``."""
    questions = load_benchmark(name, eval_root)
    preds = {q.uid: answer(i) for i, q in enumerate(questions)}
    return ADAPTERS[name].score(questions, preds, benchmark_root(name, eval_root))


# --------------------------------------------------------------------------- baselines, recomputed from the files


def test_pope_baseline_is_the_always_yes_f1_of_the_label_balance(eval_root):
    f1s = []
    for file in sorted((eval_root / "pope" / "coco").iterdir()):
        labels = [row["label"] for row in _jsonl(file)]
        p = labels.count("yes") / len(labels)  # always yes: precision p, recall 1
        f1s.append(2 * p / (1 + p))
    baseline = _baseline("pope", eval_root)
    assert baseline["score"] == pytest.approx(100 * sum(f1s) / len(f1s))
    assert baseline["rule"] == "always 'Yes'"
    assert baseline["score"] > 100 * 2 / 3 - 1e-9  # popular/random drop negatives: more yes labels than no


def _fixed_answer_mme_total(release: Path, fixed: str) -> float:
    """MME perception total of one fixed answer: per subtask 100*acc + 100*acc+ (acc+: both questions of an image
    right), from the ground-truth files (one .txt of question/answer lines per image)."""
    total = 0.0
    for task in release.iterdir():
        if task.name not in scoring.MME_PERCEPTION:
            continue
        images = [[line.split("\t")[1] for line in f.read_text().splitlines() if line.strip()]
                  for f in (task / "questions_answers_YN").iterdir()]
        acc = sum(g == fixed for gts in images for g in gts) / sum(len(gts) for gts in images)
        acc_plus = sum(all(g == fixed for g in gts) for gts in images) / len(images)
        total += 100 * acc + 100 * acc_plus
    return total


def test_mme_baseline_is_a_fixed_yes_or_no_through_the_mme_tool(eval_root):
    release = eval_root / "mme" / "MME_Benchmark_release_version"
    baseline = _baseline("mme", eval_root)
    assert baseline["score"] == pytest.approx(max(_fixed_answer_mme_total(release, a) for a in ("Yes", "No")))
    tasks = [p.name for p in release.iterdir() if p.name in scoring.MME_PERCEPTION]
    assert baseline["score"] == pytest.approx(50.0 * len(tasks))  # one yes and one no per image: acc 50%, acc+ 0


@pytest.mark.parametrize("name", ["gqa", "textvqa"])
def test_open_answer_baseline_is_the_majority_answer_soft_scored(name, eval_root):
    if name == "gqa":
        gold = [a["answer"] for a in json.loads((eval_root / "gqa" / "testdev_balanced_questions.json").read_text())
                .values() if a["isBalanced"]]
        majority, count = Counter(gold).most_common(1)[0]
        expected = 100 * count / len(gold)
    else:
        data = json.loads((eval_root / "textvqa" / "TextVQA_0.5.1_val.json").read_text())["data"]
        counts = Counter(scoring.normalize_vqa_answer(a) for item in data for a in item["answers"])
        majority = counts.most_common(1)[0][0]
        expected = 100 * sum(scoring.vqa_soft_accuracy(majority, item["answers"]) for item in data) / len(data)
    baseline = _baseline(name, eval_root)
    assert baseline["rule"] == f"always {majority!r} (majority answer)"
    assert baseline["score"] == pytest.approx(expected)
    assert baseline["score"] > 0


def test_scienceqa_baseline_is_chance_or_the_best_single_letter(eval_root):
    problems = json.loads((eval_root / "scienceqa" / "problems.json").read_text())
    with_image = [p for p in problems.values() if p["image"]]
    chance = 100 * sum(1 / len(p["choices"]) for p in with_image) / len(with_image)
    best_letter = 100 * max(Counter(p["answer"] for p in with_image).values()) / len(with_image)
    baseline = _baseline("scienceqa", eval_root)
    assert baseline["score"] == pytest.approx(max(chance, best_letter))
    assert baseline["rule"].startswith("chance" if chance >= best_letter else "always")


@pytest.mark.parametrize("name,file", [("mmbench", "mmbench_dev_20230712.tsv"),
                                       ("mmbench_cn", "mmbench_dev_cn_20231003.tsv")])
def test_mmbench_baseline_is_circular_chance(name, file, eval_root):
    rows = read_mmbench_tsv(eval_root / "mmbench" / file)
    per_question: dict[int, float] = {}
    for row in rows:  # a hit needs every pass right: the product of 1/options over the passes
        options = sum(row[ch] is not None for ch in "ABCD")
        per_question[row["index"] % 1_000_000] = per_question.get(row["index"] % 1_000_000, 1.0) / options
    baseline = _baseline(name, eval_root)
    assert baseline["score"] == pytest.approx(100 * sum(per_question.values()) / len(per_question))
    assert baseline["score"] == pytest.approx(100 * 0.25 ** 4)  # four options, four passes
    assert baseline["rule"].startswith("chance")  # a fixed letter is right on one pass of four: circular 0


def test_circular_chance_multiplies_over_the_passes_of_each_question():
    rows = ([{"index": k * 1_000_000, "options": 4} for k in range(4)]
            + [{"index": k * 1_000_000 + 1, "options": 2} for k in range(2)])
    assert scoring.mmbench_circular_chance(rows) == pytest.approx((0.25 ** 4 + 0.5 ** 2) / 2)
    with pytest.raises(ValueError):
        scoring.mmbench_circular_chance([{"index": 1_000_001, "options": 4}])


def test_best_of_several_baselines_is_the_strictest(eval_root):
    questions = load_benchmark("pope", eval_root)
    root = benchmark_root("pope", eval_root)
    always_no = ADAPTERS["pope"].score(questions, {q.uid: "No" for q in questions}, root)["headline"]
    assert always_no == 0.0 < _baseline("pope", eval_root)["score"]


# --------------------------------------------------------------------------- unparseable answers

# (answers the benchmark's scorer maps to an answer, answers it cannot)
ANSWERS = {
    "pope": (["Yes", "No, there is not.", "yes!", "There is no circle"], ["NO", "Nope", GIBBERISH, ""]),
    "mme": (["Yes", "no", "Yes, it is.", "know"], ["Y", GIBBERISH, ""]),
    "scienceqa": (["A", "B. red", "The answer is A."], ["(A)", "A.", GIBBERISH, ""]),
    "mmbench": (["A", "(B)", "The answer is C", "D."], [GIBBERISH, ""]),
    "mmbench_cn": (["A", "(B)", "E"], [GIBBERISH, ""]),  # "E": can_infer reads A-E always (a wrong letter)
    "textvqa": (["123456", "two", GIBBERISH], ["", "the", "."]),
    "gqa": (["red", "Red.", GIBBERISH], ["", "...", " "]),
}


@pytest.mark.parametrize("name", SCORED)
def test_unparseable_share_counts_what_the_scorer_cannot_read(name, eval_root, tmp_path):
    """A hand-made answers file cycling through readable and unreadable answers, read back as the suite does."""
    readable, unreadable = ANSWERS[name]
    pool = [(text, False) for text in readable] + [(text, True) for text in unreadable]
    questions = load_benchmark(name, eval_root)
    rows = [{"question_id": q.question_id, "text": pool[i % len(pool)][0], "metadata": {"uid": q.uid}}
            for i, q in enumerate(questions)]
    answers = tmp_path / f"{name}.jsonl"
    answers.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    scores = ADAPTERS[name].score(questions, predictions(answers), benchmark_root(name, eval_root))
    expected = sum(pool[i % len(pool)][1] for i in range(len(questions))) / len(questions)
    assert 0 < expected < 1
    assert scores["unparseable_share"] == pytest.approx(expected)


@pytest.mark.parametrize("name", ["pope", "mme", "scienceqa", "mmbench", "mmbench_cn"])
def test_gibberish_is_all_unparseable(name, eval_root):
    assert _score(name, eval_root, lambda i: GIBBERISH)["unparseable_share"] == 1.0


@pytest.mark.parametrize("name", ["textvqa", "gqa"])
def test_empty_open_answers_are_all_unparseable(name, eval_root):
    assert _score(name, eval_root, lambda i: "")["unparseable_share"] == 1.0
    assert _score(name, eval_root, lambda i: GIBBERISH)["unparseable_share"] == 0.0


def test_a_model_that_says_yes_to_everything_earns_exactly_the_pope_baseline(eval_root):
    scores = _score("pope", eval_root, lambda i: "yes")
    baseline = _baseline("pope", eval_root)
    assert scores["headline"] == baseline["score"]
    assert scores["unparseable_share"] == 0.0
    gibberish = _score("pope", eval_root, lambda i: GIBBERISH)
    assert gibberish["headline"] == baseline["score"]  # the reference maps it to yes: same F1, all unparseable
    metrics = build_metrics(_suite({"pope": (scores, baseline)}))
    assert metrics["benchmarks"]["pope"]["beats_baseline"] is False
    assert metrics["benchmarks"]["pope"]["baseline_margin"] == 0.0


# --------------------------------------------------------------------------- reports


def _suite(scored: dict) -> dict:
    """A run_suite result holding only what the reports read."""
    compute = {"visual_tokens": {"mean": 1.0, "max": 1}, "tflops": {"mean": 0.1, "max": 0.1}}
    return {"benchmarks": {n: {"scores": s, "baseline": b, "compute": compute, "questions_per_s": 1.0}
                           for n, (s, b) in scored.items()}, "skipped": {}}


def _oracle_gqa(eval_root: Path):
    annotations = json.loads((eval_root / "gqa" / "testdev_balanced_questions.json").read_text())
    questions = load_benchmark("gqa", eval_root)
    return lambda i: annotations[str(questions[i].question_id)]["answer"]


def test_reports_put_every_score_beside_its_baseline(eval_root, tmp_path):
    scored = {name: (_score(name, eval_root, lambda i: GIBBERISH), _baseline(name, eval_root)) for name in SCORED}
    scored["gqa"] = (_score("gqa", eval_root, _oracle_gqa(eval_root)), _baseline("gqa", eval_root))
    metrics = write_reports(_suite(scored), {}, tmp_path)

    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics
    for name in SCORED:
        entry = metrics["benchmarks"][name]
        assert entry["baseline"] == pytest.approx(scored[name][1]["score"], abs=1e-4)
        assert entry["baseline_margin"] == pytest.approx(metrics["headline"][name] - entry["baseline"], abs=1e-2)
        assert entry["beats_baseline"] is (name == "gqa")
        assert math.isfinite(entry["unparseable_share"])
    assert metrics["benchmarks"]["pope"]["unparseable_share"] == 1.0

    table = (tmp_path / "results.md").read_text()
    assert "| pope | " in table and "| 100% | always 'Yes' |" in table
    assert "Above their trivial baseline: 1 of 7 (gqa); not above: textvqa, pope, mme, scienceqa, mmbench, " \
           "mmbench_cn." in table
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = {r["benchmark"]: float(r["score"]) for r in csv.DictReader(f)}
    assert rows["pope (trivial baseline)"] == metrics["benchmarks"]["pope"]["baseline"]
    assert (tmp_path / "benchmarks.png").stat().st_size > 0
