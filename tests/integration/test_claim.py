"""`make claim` (benchmarks/fine_detail.py) end to end on the tiny smoke model: both strategies trained with the same
budget, asked the held-out questions, and the claim's table, JSON and DVC-plot CSV written."""

import csv
import json

import pytest

from benchmarks import fine_detail

pytestmark = pytest.mark.slow


def test_claim_runs_both_strategies_and_writes_its_table(tmp_path):
    out = tmp_path / "claim"
    argv = ["--params", "params/smoke.yaml", "--work", str(tmp_path / "work"), "--out-dir", str(out),
            "--train-scenes", "4", "--eval-scenes", "2", "--fine-line-scenes", "2", "--steps", "1",
            "--probe-pairs", "5", "--seed", "1"]
    assert fine_detail.main(argv) == 0
    report = json.loads((out / "claim_seed1.json").read_text())
    assert set(report["results"]) == {"uhd", "pad336"}
    for result in report["results"].values():
        assert result["n_fine"] > 0 and result["n_coarse"] > 0 and result["n_code"] == 2
        assert 0 <= result["fine_detail_acc"] <= 100 and result["train"]["finetune"]["steps"] == 1
    # UHD sees the fine lines with several slices, pad336 with its one 336x336 image
    assert report["results"]["uhd"]["visual_tokens_mean"] > report["results"]["pad336"]["visual_tokens_mean"]
    table = (out / "claim_seed1.md").read_text()
    assert "| fine lines (need the detail) |" in table and "python -m benchmarks.fine_detail --params" in table
    rows = list(csv.DictReader((out / "claim_seed1.csv").open()))
    assert {r["question"] for r in rows} >= {"fine lines / uhd", "fine lines / pad336"}
    assert all(0 <= float(r["accuracy"]) <= 100 for r in rows)
