"""Evaluation throughput of the embedded default: questions/s one at a time, in left-padded batches, and with the
questions about one image answered from one prefilled image prefix (the runner's default for greedy questions).

What: the params file's model (default: SmolLM2-135M-Instruct with the random CLIP-architecture ViT and the resampler,
built by components.model.build) answers --images embedded-style scenes (rendered by the dataset's own
synthetic_images, 1,000-2,000 px, so each has ~450 uhd-arxiv visual tokens) x --questions-per-image questions each,
greedy, --max-new-tokens. Modes, each over the same questions:
  (a) one at a time: generate_batch on each question alone (LLaVA-1.5's batch size 1)
  (b) batched: generate_batch over left-padded batches of 8 (what GPUs want)
  (c) shared prefix: generate_about_one_image per image (the system turn and the image's visual tokens are run once,
      their KV cache reused for each question; what run_benchmark does for POPE, MME, GQA, MMBench's passes)
The answers of (b) and (c) are checked equal to (a)'s. Ratios are (a)'s seconds over each mode's, in one process.

Why: issue #11 §2 (KV cache in evaluation). Prefill of ~500 tokens dominates each answer on CPU; POPE asks 5-6
questions per image, MME 2, MMBench 4 circular passes.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.eval_runner_speed [--images 3] [--questions-per-image 4]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from components.config import load_params
from components.evaluation.benchmarks import Question
from components.evaluation.suite import answer_template
from components.inference.generate import generate_about_one_image, generate_batch
from components.model.build import build_model, load_tokenizer
from components.model.processor import UhdProcessor
from components.training.loop import TrainConfig

SIZES = ((1600, 900), (900, 1600), (1200, 1200), (2000, 600), (1400, 1050))
ASKS = ("Is there a circle in the image?", "Is there a red square in the image?", "What color is the triangle?",
        "How many shapes are there besides the text?", "What word is written in large letters?")


def build(args):
    from components.data.synthetic_images import render_scene

    params = load_params(args.params)
    cfg = TrainConfig.from_params(params, "finetune", validated_dir="", layouts_path="", raw_root="", output_dir="")
    tokenizer = load_tokenizer(params.model.tokenizer, params.model.tokenizer_dir)
    model = build_model(cfg, tokenizer).eval()
    rng = np.random.default_rng(0)
    images = [render_scene(rng, *SIZES[i % len(SIZES)])[0] for i in range(args.images)]
    suffix = "\nAnswer the question using a single word or phrase."
    questions = [Question(f"{i}-{j}", image, ASKS[j % len(ASKS)] + suffix, args.max_new_tokens)
                 for i, image in enumerate(images) for j in range(args.questions_per_image)]
    return model, tokenizer, questions


def timed(fn) -> tuple[list[str], float]:
    start = time.perf_counter()
    answers = fn()
    return answers, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--questions-per-image", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    args = parser.parse_args(argv)
    model, tok, questions = build(args)
    processor, template, n = UhdProcessor(tok, model), answer_template(model), args.max_new_tokens
    per_image = args.questions_per_image
    groups = [questions[k:k + per_image] for k in range(0, len(questions), per_image)]
    generate_batch(model, processor, questions[:1], n, 1, template)  # warm-up
    modes = {
        "one_at_a_time": lambda: [generate_batch(model, processor, [q], n, 1, template)[0] for q in questions],
        "batched_8": lambda: [a for k in range(0, len(questions), 8)
                              for a in generate_batch(model, processor, questions[k:k + 8], n, 1, template)],
        "shared_prefix": lambda: [a for group in groups
                                  for a in generate_about_one_image(model, processor, group, n, template)],
    }
    results, answers = {}, {}
    for name, fn in modes.items():
        answers[name], seconds = timed(fn)
        results[name] = {"seconds": round(seconds, 2), "questions_per_s": round(len(questions) / seconds, 3)}
    base = results["one_at_a_time"]["seconds"]
    for name, r in results.items():
        r["speedup"] = round(base / r["seconds"], 2)
        r["answers_equal_one_at_a_time"] = answers[name] == answers["one_at_a_time"]
        print(f"{name:>14}: {len(questions)} questions in {r['seconds']:.1f} s = {r['questions_per_s']:.2f} "
              f"questions/s, {r['speedup']:.2f}x, answers equal: {r['answers_equal_one_at_a_time']}")
    print(json.dumps({"benchmark": "eval_runner_speed", "architecture": model.config.architectures,
                      "images": args.images, "questions_per_image": per_image, "max_new_tokens": n,
                      "threads": torch.get_num_threads(), **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
