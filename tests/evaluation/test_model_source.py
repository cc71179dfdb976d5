"""Evaluating a model the pipeline did not train (issue #14 §4): eval.model, released/dvc.yaml's stage, the compute
report of a converted model and results.md beside a published row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from components.config import load_params
from components.evaluation.model_source import converted_spec, load_for_evaluation, weights_digest
from components.evaluation.paper_scores import PAPER_ROWS
from components.evaluation.report import markdown_table
from components.model.architectures import clip_vit_l14_336, get_model_spec, spec_of, vicuna_13b
from components.model.flops import flops_breakdown
from components.model.modeling import LlavaUhdConfig

REPO = Path(__file__).resolve().parents[2]


def _released_params(tmp_path: Path, **eval_keys) -> Path:
    """params.yaml with eval.* overridden, the tiny fixture's GPT-2 tokenizer and one quick benchmark."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["tokenizer"] = "gpt2"
    params["model"]["tokenizer_dir"] = str(REPO / "assets/tokenizers/gpt2")
    params["eval"].update({"benchmarks": ["pope"], "extreme_aspect": [], **eval_keys})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_an_empty_eval_model_records_that_nothing_was_released(tmp_path, monkeypatch):
    from cli.main import main as uhd

    monkeypatch.chdir(tmp_path)
    assert uhd(["evaluate-released", "--params", str(_released_params(tmp_path)), "--no-mlflow"]) == 0
    assert json.loads((tmp_path / "reports/released/metrics.json").read_text()) == {}
    assert "eval.model" in (tmp_path / "reports/released/results.md").read_text()


def test_a_saved_model_is_scored_on_benchmarks_fetched_alone(tiny, tmp_path, monkeypatch):
    """No training, no download stage: the released run generates the embedded benchmarks itself and scores the
    directory eval.model names; provenance records where the model came from and its weights' digest."""
    from cli.main import main as uhd

    model_dir = tmp_path / "saved"
    tiny[0].save_pretrained(model_dir)
    monkeypatch.chdir(tmp_path)
    params = _released_params(tmp_path, model=str(model_dir), paper_row="llava-1.5-13b")
    assert uhd(["evaluate-released", "--params", str(params), "--no-mlflow"]) == 0
    prov = json.loads((tmp_path / "reports/released/provenance.json").read_text())["provenance"]
    assert prov["model_source"] == {"kind": "directory", "spec": str(model_dir)}
    assert prov["model_sha256"] == weights_digest([model_dir / "model.safetensors"])
    assert prov["eval_root"].endswith("synthetic_benchmarks/eval")
    metrics = json.loads((tmp_path / "reports/released/metrics.json").read_text())
    assert set(metrics["headline"]) == {"pope"}
    results = (tmp_path / "reports/released/results.md").read_text()
    pope = metrics["headline"]["pope"]
    assert "| difference (this run - LLaVA-1.5-13B (paper)) |" in results
    assert f"{pope - PAPER_ROWS['llava-1.5-13b'].scores['pope']:+.1f}" in results


def test_a_bad_eval_model_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from cli.main import main as uhd

    monkeypatch.chdir(tmp_path)
    params = _released_params(tmp_path, model="llava-hf:/no/such/checkpoint")
    assert uhd(["evaluate-released", "--params", str(params), "--no-mlflow"]) == 2
    err = capsys.readouterr().err
    assert "eval.model='llava-hf:/no/such/checkpoint'" in err and "not a directory" in err


def test_format_prefixes_are_conversions_and_other_strings_are_not():
    assert converted_spec("llava-hf:/ckpt/llava-1.5-13b-hf") == ("llava-hf", Path("/ckpt/llava-1.5-13b-hf"))
    assert converted_spec("llava-onevision:ov") == ("llava-onevision", Path("ov"))
    assert converted_spec("models:/llava-uhd@champion") is None
    assert converted_spec("/a/dir") is None


def test_the_empty_spec_is_the_pipelines_own_model(tiny, tmp_path):
    from components.config import ModelConfig

    tiny[0].save_pretrained(tmp_path / "model")
    gpt2 = ModelConfig(tokenizer="gpt2", tokenizer_dir=str(REPO / "assets/tokenizers/gpt2"))
    found = load_for_evaluation("", tmp_path / "model", gpt2)
    assert found.source == {"kind": "pipeline", "spec": "", "dir": str(tmp_path / "model")}
    assert found.flops_model == "llava-uhd-13b"  # the tiny model's own FLOPs would say nothing about the method


def test_a_converted_models_flops_are_its_own_architectures():
    """A converted LLaVA-1.5-13B is costed as itself: its config's spec gives exactly the paper spec's FLOPs."""
    cfg = LlavaUhdConfig(vision_config=clip_vit_l14_336().to_dict(), text_config=vicuna_13b().to_dict(),
                         compressor="mlp", strategy="pad336", preset="pad336", spatial_schema=False)
    own = flops_breakdown(spec_of(cfg, "converted"), 672, 1008)
    paper = flops_breakdown(get_model_spec("llava-1.5-13b"), 672, 1008)
    assert own.visual_tokens == paper.visual_tokens == 576
    assert own.tflops == pytest.approx(paper.tflops, rel=1e-12)
    assert own.model == "converted"


def test_paper_rows_are_the_only_accepted_ids(tmp_path):
    from components.evaluation.suite import EvalPlan

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["eval"]["paper_row"] = "llava-2"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="paper_row 'llava-2' is not a published row"):
        EvalPlan.from_params(load_params(path).eval)


def test_results_md_without_a_paper_row_has_no_difference_row():
    metrics = {"headline": {"pope": 80.0}, "benchmarks": {}, "extreme_aspect": {}, "compute": {}, "skipped": {}}
    assert "difference" not in markdown_table(metrics)
    assert "| difference (this run - LLaVA-1.5-13B (paper)) | – | – | – | – | – | -5.9 |" in markdown_table(
        metrics, paper_row="llava-1.5-13b")


def test_a_released_checkpoint_converted_on_the_fly_answers_as_its_converted_directory(tmp_path, monkeypatch):
    """eval.model=llava-hf:DIR converts in memory; a `uhd convert` directory of the same checkpoint answers the same
    questions with the same answers. Both are costed as their own architecture (a tiny CLIP + Llama here)."""
    from cli.main import main as uhd
    from tests.model.llava_checkpoints import tiny_hf_llava, write_llava_hf

    checkpoint = write_llava_hf(tiny_hf_llava(), tmp_path / "llava-1.5-tiny-hf")
    converted = tmp_path / "converted"
    assert uhd(["convert", str(checkpoint), str(converted), "--format", "llava-hf"]) == 0
    monkeypatch.chdir(tmp_path)
    runs = {}
    for spec in (f"llava-hf:{checkpoint}", str(converted)):
        reports = tmp_path / f"reports-{len(runs)}"
        params = _released_params(tmp_path, model=spec, max_new_tokens=3)
        assert uhd(["evaluate-released", "--params", str(params), "--no-mlflow", "--reports", str(reports),
                     "--out", str(tmp_path / f"answers-{len(runs)}")]) == 0
        runs[spec] = json.loads((reports / "provenance.json").read_text())
    on_the_fly, directory = runs.values()
    assert on_the_fly["provenance"]["model_source"]["kind"] == "converted"
    assert on_the_fly["provenance"]["model_source"]["format"] == "llava-hf"
    assert directory["provenance"]["model_source"]["kind"] == "converted-directory"
    assert on_the_fly["provenance"]["slicing"] == directory["provenance"]["slicing"] == {"strategy": "pad336",
                                                                                       "preset": "pad336"}
    compute = on_the_fly["benchmarks"]["pope"]["compute"]
    assert compute["flops_model"] == "llava-hf:llava-1.5-tiny-hf"
    assert compute["visual_tokens"]["max"] == 576  # LLaVA-1.5: 24x24 patches of the padded 336x336 image
    answers = [(tmp_path / f"answers-{i}/answers/pope.jsonl").read_text().splitlines() for i in range(2)]
    texts = [[json.loads(line)["text"] for line in run] for run in answers]
    assert texts[0] == texts[1] and len(texts[0]) > 0


def test_placement_defaults_to_the_references_half_precision_on_cuda_only():
    from components.evaluation.model_source import placement

    assert placement("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert placement("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    if not torch.cuda.is_available():
        assert placement("auto", "auto") == (torch.device("cpu"), torch.float32)
        with pytest.raises(ValueError, match="no CUDA device"):
            placement("cuda", "auto")
