"""Eval runner throughput on the tiny model: questions/s at batch size 1 vs 8 (CPU by default).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_runner_speed.py [--n 16] [--max-new-tokens 8]

Prints one line per batch size and a final JSON line. The questions are small synthetic images (64-160 px sides),
so the numbers measure the runner + tiny model, not a paper-scale model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from components.evaluation.benchmarks import Question
from components.evaluation.runner import run_benchmark
from components.model.build import load_tokenizer, tiny_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="questions per run")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--batch-sizes", default="1,8")
    args = parser.parse_args()
    tok = load_tokenizer("gpt2", REPO / "assets/tokenizers/gpt2")
    model = tiny_model(tok).eval()
    questions = [Question(i, Image.new("RGB", (64 + 7 * i % 96, 64 + 13 * i % 96), (10 * i % 255, 120, 200)),
                          "What colour is the picture?\nAnswer the question using a single word or phrase.",
                          args.max_new_tokens) for i in range(args.n)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_benchmark(model, tok, questions[:2], Path(tmp) / "warmup.jsonl", batch_size=2)
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            start = time.perf_counter()
            run_benchmark(model, tok, questions, Path(tmp) / f"bs{bs}.jsonl", batch_size=bs)
            elapsed = time.perf_counter() - start
            results[f"bs{bs}_questions_per_s"] = round(args.n / elapsed, 2)
            print(f"batch size {bs}: {args.n} questions in {elapsed:.2f}s = {args.n / elapsed:.2f} questions/s")
        same = (Path(tmp) / "bs1.jsonl").read_text() == (Path(tmp) / "bs8.jsonl").read_text() \
            if {"bs1_questions_per_s", "bs8_questions_per_s"} <= set(results) else None
    print(json.dumps({"benchmark": "eval_runner_speed", "device": str(model.device), "n": args.n,
                      "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
                      "bs1_equals_bs8": same, **results}))


if __name__ == "__main__":
    main()
