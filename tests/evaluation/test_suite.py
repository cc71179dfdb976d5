"""The evaluate stage's pieces: image variants, compute report, the suite over the embedded benchmark files, reports,
the server-scored adapters and the stage's model check."""

import json
from pathlib import Path

import pytest
from PIL import Image

from components.data.synthetic import DatasetWriter, SyntheticSpec
from components.data.synthetic_eval import write_benchmarks
from components.evaluation.benchmarks import ADAPTERS, BenchmarkMissing, IncompletePredictions, load_benchmark
from components.evaluation.compute import compute_report, variant_size
from components.evaluation.report import markdown_table, write_reports
from components.evaluation.suite import EvalPlan, run_suite
from components.evaluation.variants import (
    PAD_FILL,
    image_transform,
    pad_extreme_aspect,
    pre_resize,
    preprocessing_config,
    preprocessing_hash,
)
from components.model.build import tiny_model

SEVEN = ("textvqa", "pope", "gqa", "mme", "scienceqa", "mmbench", "mmbench_cn")


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_benchmarks(DatasetWriter(out), SyntheticSpec(eval_scenes=2))
    return out / "eval"


@pytest.mark.parametrize("size", [(300, 100), (100, 300), (50, 50)])
def test_extreme_aspect_doubles_the_long_side_with_the_image_centred(size):
    image = Image.new("RGB", size, (255, 0, 0))
    padded = pad_extreme_aspect(image)
    w, h = size
    assert padded.size == ((2 * w, h) if w >= h else (w, 2 * h))
    assert padded.size == variant_size(size, extreme_aspect=True)
    cx, cy = padded.width // 2, padded.height // 2
    assert padded.getpixel((cx, cy)) == (255, 0, 0)
    assert padded.getpixel((0, 0)) == PAD_FILL


def test_pre_resize_forces_the_long_side_up_or_down():
    assert pre_resize(Image.new("RGB", (2048, 1024)), 1024).size == (1024, 512)
    assert pre_resize(Image.new("RGB", (200, 400)), 1024).size == (512, 1024)
    both = image_transform(1024, extreme_aspect=True)(Image.new("RGB", (200, 400)))
    assert both.size == variant_size((200, 400), 1024, extreme_aspect=True) == (512, 2048)
    assert image_transform(0, False) is None


def test_preprocessing_hash_tells_variants_apart(tiny):
    cfg = tiny[0].config
    hashes = {preprocessing_hash(preprocessing_config(cfg, r, e)) for r in (0, 1024) for e in (False, True)}
    assert len(hashes) == 4
    assert preprocessing_hash(preprocessing_config(cfg)) == preprocessing_hash(preprocessing_config(cfg))


def test_compute_report_uses_the_models_own_layout(tiny, eval_root):
    model = tiny[0]
    questions = load_benchmark("textvqa", eval_root)
    report = compute_report(model, questions)
    sizes = [Image.open(q.image).size for q in questions]  # the embedded TextVQA has no EXIF-rotated files
    tokens = [model.plan(*s).num_tokens for s in sizes]
    assert report["images"] == len(set(map(str, (q.image for q in questions))))
    assert report["visual_tokens"] == {"mean": round(sum(tokens) / len(tokens), 1), "max": max(tokens)}
    assert 0 < report["tflops"]["mean"] <= report["tflops"]["max"]
    padded = compute_report(model, questions, extreme_aspect=True)
    assert padded["visual_tokens"]["max"] >= report["visual_tokens"]["max"] or padded != report


@pytest.mark.parametrize("strategy,preset", [("anyres", "onevision"), ("pad336", "pad336"), ("fixed2x2", "fixed2x2")])
def test_compute_report_for_every_strategy(tiny, eval_root, strategy, preset):
    """Each Table-2 ablation gets its compute report; AnyRes is costed with the projector it runs (the MLP)."""
    tok = tiny[1]
    model = tiny_model(tok, strategy=strategy, preset=preset).eval()
    report = compute_report(model, load_benchmark("textvqa", eval_root))
    assert report["visual_tokens"]["max"] == max(model.plan(*Image.open(q.image).size).num_tokens
                                                 for q in load_benchmark("textvqa", eval_root))
    assert 0 < report["tflops"]["mean"] <= report["tflops"]["max"]


@pytest.fixture(scope="module")
def suite(tiny, eval_root, tmp_path_factory):
    model, tok = tiny
    out = tmp_path_factory.mktemp("eval_out")
    plan = EvalPlan(SEVEN + ("vqav2",), batch_size=4, max_new_tokens=3, extreme_aspect=("textvqa",))
    return run_suite(model, tok, eval_root, out, plan, log=lambda *_: None), out, plan


def test_suite_scores_every_embedded_benchmark_and_skips_absent_ones(suite):
    result, out, _ = suite
    assert set(result["benchmarks"]) == set(SEVEN)
    assert "does not exist" in result["skipped"]["vqav2"]
    for name, r in result["benchmarks"].items():
        assert r["scores"]["headline"] is not None, name
        assert Path(r["answers"]).exists()
        assert r["decoding"]["max_new_tokens"] == 3 and r["decoding"]["num_beams"] == 1
    ext = result["benchmarks"]["textvqa"]["extreme_aspect"]
    assert ext["drop"] == pytest.approx(result["benchmarks"]["textvqa"]["scores"]["headline"] - ext["headline"])
    assert ext["preprocessing_hash"] != result["benchmarks"]["textvqa"]["preprocessing_hash"]


def test_suite_resumes_from_its_answers_files(suite, tiny, eval_root):
    result, out, plan = suite
    before = {n: Path(r["answers"]).read_text() for n, r in result["benchmarks"].items()}
    again = run_suite(*tiny, eval_root, out, plan, log=lambda *_: None)
    assert {n: Path(r["answers"]).read_text() for n, r in again["benchmarks"].items()} == before
    assert {n: r["scores"] for n, r in again["benchmarks"].items()} == {
        n: r["scores"] for n, r in result["benchmarks"].items()}


def test_reports_hold_headlines_provenance_table_and_plots(suite, tmp_path):
    result, _, _ = suite
    metrics = write_reports(result, {"model_sha256": "abc"}, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert set(metrics["headline"]) == set(SEVEN) and metrics["skipped"].keys() == {"vqav2"}
    assert set(metrics["extreme_aspect"]) == {"textvqa"}
    for name in SEVEN:  # every scored benchmark beside its trivial baseline, with the share the scorer could not read
        entry, run = metrics["benchmarks"][name], result["benchmarks"][name]
        assert entry["baseline"] == pytest.approx(run["baseline"]["score"], abs=1e-4)
        assert entry["beats_baseline"] is (run["scores"]["headline"] > run["baseline"]["score"])
        assert 0.0 <= entry["unparseable_share"] <= 1.0
    assert json.loads((tmp_path / "provenance.json").read_text())["provenance"]["model_sha256"] == "abc"
    # this machine's speed is not in the tracked reports (a rerun writes the same bytes, #13) but in speed.json
    for tracked in ("metrics.json", "provenance.json", "results.md", "scores.csv"):
        assert "questions_per_s" not in (tmp_path / tracked).read_text(), tracked
    speed = json.loads((tmp_path / "speed.json").read_text())["questions_per_s"]
    assert set(speed) == set(SEVEN) | {"textvqa_extreme_aspect"} and all(v > 0 for v in speed.values())
    table = (tmp_path / "results.md").read_text()
    assert "| this run |" in table and "LLaVA-UHD-13B" in table and "skipped" in table
    assert "| trivial baseline |" in table and "Above their trivial baseline:" in table
    assert (tmp_path / "benchmarks.png").stat().st_size > 0 and (tmp_path / "scores.csv").exists()
    assert markdown_table(metrics).count("\n|") >= 3


def test_uhd_eccv_protocol_uses_the_reference_beams_unless_overridden():
    plan = EvalPlan(SEVEN, protocol="uhd-eccv", num_beams={"gqa": 1})
    assert plan.beams("textvqa") == 3 and plan.beams("mme") == 5 and plan.beams("gqa") == 1
    assert EvalPlan(SEVEN).beams("textvqa") == 1


def _server_files(root: Path, name: str) -> None:
    adapter = ADAPTERS[name]
    (root / adapter.images).mkdir(parents=True)
    lines = []
    for i in range(3):
        image = f"img_{i}.jpg"
        Image.new("RGB", (40, 30)).save(root / adapter.images / image)
        lines.append({"question_id": i, "image": image, "text": f"What is it {i}?"})
    (root / adapter.questions_file).write_text("".join(json.dumps(r) + "\n" for r in lines))
    if name == "vqav2":  # the full test2015 list has questions outside test-dev
        full = lines + [{"question_id": 99, "image": "x.jpg", "text": "?"}]
        (root / adapter.full_split).write_text("".join(json.dumps(r) + "\n" for r in full))


@pytest.mark.parametrize("name", ["vqav2", "vizwiz"])
def test_server_scored_benchmarks_write_submission_files(name, tmp_path):
    root = tmp_path / name
    _server_files(root, name)
    adapter = ADAPTERS[name]
    questions = adapter.questions(root)
    with pytest.raises(IncompletePredictions):
        adapter.score(questions, {0: "Two."}, root, out_dir=tmp_path / "subs")
    result = adapter.score(questions, {q.uid: "Two." for q in questions}, root, out_dir=tmp_path / "subs")
    rows = json.loads(Path(result["submission"]).read_text())
    assert result["headline"] is None
    if name == "vqav2":
        assert len(rows) == 4 and rows[-1] == {"question_id": 99, "answer": ""} and rows[0]["answer"] == "2"
    else:
        assert rows[0] == {"image": "img_0.jpg", "answer": "2"} and len(rows) == 3


def test_server_scored_benchmark_without_files_is_missing(tmp_path):
    with pytest.raises(BenchmarkMissing):
        ADAPTERS["vizwiz"].questions(tmp_path / "vizwiz")


def test_evaluated_provenance_holds_nothing_of_the_run(tiny, tmp_path):
    """provenance.json is tracked in git: a rerun of the same weights must write the same bytes (#13), so the MLflow
    ids and the commit go to MLflow's tags (run_links), and a stale run record links nothing."""
    from components.config import ModelConfig, load_params
    from components.evaluation.exported_model import provenance, run_links
    from components.evaluation.model_source import load_for_evaluation
    from components.evaluation.suite import EvalPlan

    tiny[0].save_pretrained(tmp_path / "model")
    gpt2 = ModelConfig(tokenizer="gpt2", tokenizer_dir="assets/tokenizers/gpt2")  # the tiny fixture's tokenizer
    found = load_for_evaluation("", tmp_path / "model", gpt2)
    model, sha = found.model, found.sha256
    prov = provenance(sha, model, "synthetic", EvalPlan.from_params(load_params().eval), "data/raw/synthetic/eval")
    assert prov["model_sha256"] == sha
    assert not {"mlflow_run_id", "model_uri", "checkpoint_uri", "git_commit"} & set(prov)
    record = {"mlflow_run_id": "r1", "model_uri": "models:/m-1", "model_sha256": sha}
    assert run_links(record, sha)["model_run_id"] == "r1"
    assert run_links({**record, "model_sha256": "0" * 64}, sha)["model_run_id"] is None  # another run's record
