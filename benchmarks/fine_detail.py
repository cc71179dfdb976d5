"""The paper's claim in miniature (`make claim`): UHD slicing against the pad336 baseline on fine-detail questions.

Both strategies are trained with the same data, steps, batch, lr, seed and LLM (the params file's model: the
embedded default's SmolLM2-135M-Instruct and random CLIP-architecture ViT) and asked held-out questions:

- fine lines (the embedded GQA's category "fine_detail", ids "fd...": "Are the fine lines in the background
  horizontal or vertical?", balanced, chance 50%). The lines have a 4-6 px period, which pad336's antialiased
  downscale to 336x336 averages to the same flat colour for both answers, while UHD's slices keep them;
- six-digit codes in small print (the embedded TextVQA; chance ~0);
- colour / shape questions on the same GQA scenes (coarse: both strategies see them).

Steps, all with the pipeline's own code: the embedded data is generated into --work/seed<N> by
pipelines.download (reused when present), validated by `pipelines.validate --stage` and laid out by
pipelines.layouts once per strategy; then, for each strategy, components.training.loop.train runs pretrain (if
--pretrain-steps) then finetune (single process, no Ray), the result is exported and answers the questions through
components.evaluation.runner.run_benchmark, scored by the benchmarks' adapters. The pixel probe measures what each
strategy's encoded images retain of the lines (the RMS difference between a scene drawn with horizontal and the
same scene with vertical lines, normalized units); a frozen-ViT linear probe tells whether the orientation is
readable from each strategy's own (random) vision features. --fine-line-scenes adds fine-tuning scenes asked only
the fine-line question (SyntheticSpec).

Writes reports/claim/claim.{json,md,csv} (seed 0; claim_seed<N>.* otherwise); `dvc plots show
reports/claim/claim.csv` draws the bars.

    make claim [SEED=1]    # = OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.fine_detail --seed 0
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

STRATEGIES = ("uhd", "pad336")


def write_params(work: Path, args) -> Path:
    """params.yaml with the data size of this run; one copy per strategy (the layouts stage reads slicing)."""
    base = yaml.safe_load(Path(args.params).read_text())
    base["data"]["seed"] = args.seed
    base["data"]["synthetic"].update(train_scenes=args.train_scenes, eval_scenes=args.eval_scenes,
                                     fine_line_scenes=args.fine_line_scenes)
    base["layouts"]["workers"] = 1  # 2 shared cores: no process pool
    base["validate"]["workers"] = 1
    for strategy in STRATEGIES:
        params = json.loads(json.dumps(base))
        params["slicing"]["strategy"] = strategy
        (work / f"params_{strategy}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work / "params_uhd.yaml"


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _generator_digest() -> str:
    """The data generator's source: a changed generator regenerates the data in --work."""
    from components.data import synthetic, synthetic_eval, synthetic_images

    text = "".join(Path(m.__file__).read_text() for m in (synthetic, synthetic_eval, synthetic_images))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare(work: Path, args) -> dict:
    """download -> validate -> layouts (per strategy), as the DVC stages run them; seconds per stage."""
    from pipelines import download, layouts, validate

    params = write_params(work, args)
    times, quiet = {}, contextlib.redirect_stdout(io.StringIO())
    raw, stamp = work / "raw", {"seed": args.seed, "train_scenes": args.train_scenes, "eval_scenes": args.eval_scenes,
                                "fine_line_scenes": args.fine_line_scenes, "generator": _generator_digest()}
    if not (raw / "manifest.parquet").exists() or _read_json(raw / "benchmark_spec.json") != stamp:
        t0 = time.perf_counter()
        with quiet:
            assert download.main(["--params", str(params), "--raw", str(raw),
                                  "--manifest", str(raw / "manifest.parquet")]) == 0
        (raw / "benchmark_spec.json").write_text(json.dumps(stamp))
        times["download"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert validate.main(["--stage", "--params", str(params), "--raw", str(raw), "--validated",
                              str(work / "validated"), "--quarantine", str(work / "quarantine"),
                              "--reports", str(work / "reports/validate"), "--quiet"]) == 0
    times["validate"] = time.perf_counter() - t0
    for strategy in STRATEGIES:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            layouts.main(["--params", str(work / f"params_{strategy}.yaml"), "--images",
                          str(work / "validated/images.parquet"), "--image-root", str(raw),
                          "--out", str(work / f"layouts_{strategy}.parquet"),
                          "--reports", str(work / f"reports/layouts_{strategy}"), "--quiet"])
        times[f"layouts_{strategy}"] = time.perf_counter() - t0
    return times


def strategy_params(work: Path, strategy: str):
    from components.config import load_params

    return load_params(work / f"params_{strategy}.yaml")


def train_strategy(work: Path, strategy: str, args) -> tuple[Path, dict]:
    """pretrain (compressor) then finetune with this run's budget; the exported model dir. Everything else (the
    LLM, tokenizer, conversation template, ViT, compressor, trained LLM layers) is the params file's."""
    from components.training.export import export_checkpoint
    from components.training.loop import TrainConfig, train

    params, out, stats, init = strategy_params(work, strategy), work / "runs" / strategy, {}, None
    for stage, steps, lr in (("pretrain", args.pretrain_steps, args.pretrain_lr), ("finetune", args.steps, args.lr)):
        cfg = TrainConfig.from_params(params, stage, validated_dir=str(work / "validated"),
                                      layouts_path=str(work / f"layouts_{strategy}.parquet"),
                                      raw_root=str(work / "raw"), output_dir=str(out / stage), init_from=init)
        cfg = dataclasses.replace(cfg, steps=steps, lr=lr, global_batch=args.global_batch,
                                  micro_batch=args.micro_batch, warmup_ratio=0.03, seed=args.seed,
                                  tune_vision=args.tune_vision)
        if steps <= 0:
            continue
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            metrics = train(cfg)
            init = str(export_checkpoint(cfg, Path(cfg.output_dir) / "checkpoints", out / f"{stage}_model"))
        losses = metrics["losses"]
        stats[stage] = {"steps": steps, "wall_s": round(time.perf_counter() - t0, 1),
                        "first_loss": round(losses[0], 3), "last_loss": round(float(np.mean(losses[-5:])), 3),
                        "losses": [round(x, 4) for x in losses], "tokens_per_s": round(metrics["tokens_per_s"], 1)}
        print(f"  {strategy} {stage}: { {k: v for k, v in stats[stage].items() if k != 'losses'} }", flush=True)
    return Path(init), stats


def _answer(model, tokenizer, name: str, eval_root: Path, work: Path, strategy: str, args):
    from components.evaluation.benchmarks import load_benchmark
    from components.evaluation.runner import predictions, run_benchmark
    from components.evaluation.suite import answer_template

    questions = load_benchmark(name, eval_root)
    answers = work / "runs" / strategy / f"{name}_answers.jsonl"
    answers.unlink(missing_ok=True)
    run_benchmark(model, tokenizer, questions, answers, batch_size=8, max_new_tokens=args.max_new_tokens,
                  template=answer_template(model))
    return questions, predictions(answers)


def evaluate(model_dir: Path, work: Path, strategy: str, args) -> dict:
    """Held-out answers through the eval runner, scored by the benchmarks' own adapters: GQA's fine-line questions
    (need the detail) and its colour/shape questions (coarse) apart, and TextVQA's small six-digit codes."""
    from PIL import Image

    from components.evaluation.benchmarks import ADAPTERS, benchmark_root
    from components.model.build import load_saved_model, load_tokenizer_for

    params = strategy_params(work, strategy)
    model = load_saved_model(model_dir)
    tokenizer = load_tokenizer_for(model, params.model.tokenizer, params.model.tokenizer_dir)
    eval_root = work / "raw" / "synthetic" / "eval"
    t0 = time.perf_counter()
    questions, preds = _answer(model, tokenizer, "gqa", eval_root, work, strategy, args)
    codes, code_preds = _answer(model, tokenizer, "textvqa", eval_root, work, strategy, args)
    wall = time.perf_counter() - t0
    fine = [q for q in questions if q.metadata.get("category") == "fine_detail"]
    coarse = [q for q in questions if q.metadata.get("category") != "fine_detail"]
    root = benchmark_root("gqa", eval_root)
    tokens = [model.plan(*Image.open(q.image).size).num_tokens for q in fine]
    said = {}
    for q in fine:
        said[preds[q.uid]] = said.get(preds[q.uid], 0) + 1
    return {"fine_detail_acc": ADAPTERS["gqa"].score(fine, preds, root)["accuracy"], "n_fine": len(fine),
            "fine_detail_forced_choice_acc": forced_choice(model, tokenizer, fine, root),
            "coarse_acc": ADAPTERS["gqa"].score(coarse, preds, root)["accuracy"], "n_coarse": len(coarse),
            "code_acc": ADAPTERS["textvqa"].score(codes, code_preds, benchmark_root("textvqa", eval_root))["accuracy"],
            "n_code": len(codes), "visual_tokens_mean": float(np.mean(tokens)), "eval_wall_s": round(wall, 1),
            "fine_answers": said}


def forced_choice(model, tokenizer, fine: list, root: Path) -> float:
    """Secondary measure, not the benchmark's score: % of fine-detail questions where the model gives the right
    orientation's first answer token (as training tokenizes it) a higher next-token logit than the wrong one's, at
    the runner's own prompt and image input."""
    import torch

    from components.data.conversation import IGNORE_INDEX, IMAGE_TOKEN, encode_conversation
    from components.data.synthetic_images import LINES
    from components.evaluation.suite import answer_template
    from components.model.processor import UhdProcessor
    from components.slicing.pixels import load_image

    template = answer_template(model)

    def first_answer_token(question: str, answer: str) -> int:
        turns = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}, {"from": "gpt", "value": answer}]
        encoded = encode_conversation(turns, tokenizer, template)
        return next(label for label in encoded.labels if label != IGNORE_INDEX)

    gold = json.loads((root / "testdev_balanced_questions.json").read_text())
    processor, right = UhdProcessor(tokenizer, model), 0
    with torch.no_grad():
        for q in fine:
            ids = [first_answer_token(q.prompt_text, a) for a in LINES]
            batch = processor.prompt_batch([q.prompt_text], [load_image(q.image)], template)
            logits = model(**batch, logits_to_keep=1).logits[0, -1, ids]
            right += LINES[int(logits.argmax())] == gold[str(q.question_id)]["answer"]
    return round(100.0 * right / max(len(fine), 1), 1)


def pixel_probe(seed: int = 0) -> dict:
    """RMS difference (normalized units) of the encoded images of one scene drawn with horizontal vs vertical
    lines, per strategy (UHD: its slices; pad336: its single image), over the sizes and aspects of the set."""
    from components.data.synthetic_images import ASPECTS, FINE_LINES_MIN_SIDE, encode_image_file, render_scene
    from components.slicing.pixels import encode_image
    from components.slicing.strategies import plan_layout

    out = {s: [] for s in STRATEGIES}
    for k, (aw, ah) in enumerate(ASPECTS):
        side = FINE_LINES_MIN_SIDE + (2048 - FINE_LINES_MIN_SIDE) * k // (len(ASPECTS) - 1)
        w, h = max(int(aw * side / max(aw, ah)), 8), max(int(ah * side / max(aw, ah)), 8)
        files = [encode_image_file(render_scene(np.random.default_rng([seed, k]), w, h, lines=o)[0], 0)[0]
                 for o in ("horizontal", "vertical")]
        for strategy in STRATEGIES:
            layout = plan_layout(w, h, strategy, "uhd-arxiv" if strategy == "uhd" else strategy)
            enc = [encode_image(io.BytesIO(f), layout) for f in files]
            pick = [list(e.slices) if strategy == "uhd" else [e.overview] for e in enc]
            out[strategy].append(float(np.sqrt(np.mean([np.mean((a - b) ** 2) for a, b in zip(*pick, strict=True)]))))
    return {s: {"mean": round(float(np.mean(v)), 4), "max": round(float(np.max(v)), 4)} for s, v in out.items()}


def feature_probe(args, work: Path, pairs: int = 40, folds: int = 5) -> dict:
    """Is the orientation in what the language model could read? Each strategy's own frozen ViT (the seed's
    random init, as training starts) encodes `pairs` held-out scenes drawn with both orientations (own random
    stream, sizes and aspects of the fine-line scenes); a ridge classifier on the per-image mean and std of the
    patch features is cross-validated with both drawings of a scene in the same fold. % correct; chance 50."""
    import torch

    from components.data.synthetic_images import ASPECTS, FINE_LINES_MIN_SIDE, LINES, encode_image_file, render_scene
    from components.model.build import build_model, load_tokenizer
    from components.slicing.pixels import encode_image
    from components.slicing.strategies import plan_layout
    from components.training.loop import TrainConfig

    files = []
    for i in range(pairs):
        rng = np.random.default_rng([args.seed, 99, i])
        aw, ah = ASPECTS[i % len(ASPECTS)]
        scale = int(rng.integers(FINE_LINES_MIN_SIDE, 2049)) / max(aw, ah)
        w, h = max(int(aw * scale), 8), max(int(ah * scale), 8)
        files += [(encode_image_file(render_scene(np.random.default_rng([args.seed, 99, i]), w, h, lines=o)[0], i)[0],
                   w, h) for o in LINES]
    y, out = np.tile([1.0, -1.0], pairs), {}
    for strategy in STRATEGIES:
        params = strategy_params(work, strategy)
        preset = params.slicing.active_preset
        cfg = dataclasses.replace(TrainConfig.from_params(params, "finetune", validated_dir="", layouts_path="",
                                                          raw_root="", output_dir=""), seed=args.seed)
        tokenizer = load_tokenizer(params.model.tokenizer, params.model.tokenizer_dir)
        tower, feats = build_model(cfg, tokenizer).vision_tower.eval(), []
        for data, w, h in files:
            enc = encode_image(io.BytesIO(data), plan_layout(w, h, strategy, preset))
            with torch.no_grad():
                f = torch.cat([t.reshape(-1, t.shape[-1]) for t in tower([torch.from_numpy(p) for p in
                               (list(enc.slices) if strategy == "uhd" else [enc.overview])])]).numpy()
            feats.append(np.concatenate([f.mean(0), f.std(0)]))
        x, fold, right = np.array(feats), (np.arange(2 * pairs) // 2) % folds, 0
        for k in range(folds):
            tr, te = fold != k, fold == k
            mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
            a = (x[tr] - mu) / sd
            wts = np.linalg.solve(a.T @ a + len(a) * np.eye(a.shape[1]), a.T @ y[tr])
            right += int(np.sum(np.sign(((x[te] - mu) / sd) @ wts) == y[te]))
        out[strategy] = round(100.0 * right / len(y), 1)
    return out


def _table(report: dict, command: str) -> str:
    """The claim's table: accuracy per question kind and strategy, with chance, the command and the wall time."""
    r = report["results"]
    names = [s for s in STRATEGIES if s in r]
    rows = [("fine lines (need the detail)", "fine_detail_acc", "n_fine", "50.0"),
            ("six-digit codes in small print (TextVQA)", "code_acc", "n_code", "~0"),
            ("colour / shape (coarse)", "coarse_acc", "n_coarse", report["coarse_chance"])]
    lines = [f"| held-out questions | n | chance | {' | '.join(names)} |", "|---|---:|---:|" + "---:|" * len(names)]
    for label, key, n, chance in rows:
        scores = " | ".join(f"{r[s][key]:.1f}" for s in names)
        lines.append(f"| {label} | {r[names[0]][n]} | {chance} | {scores} |")
    lines.append("| fine lines, forced choice between the two answers | "
                 f"{r[names[0]]['n_fine']} | 50.0 | " + " | ".join(f"{r[s]['fine_detail_forced_choice_acc']:.1f}"
                                                              for s in names) + " |")
    lines.append("| visual tokens per fine-line image (mean) | | | " + " | ".join(
        f"{r[s]['visual_tokens_mean']:.0f}" for s in names) + " |")
    lines.append("| frozen-ViT linear probe on the fine lines | | 50.0 | " + " | ".join(
        f"{report['frozen_vit_probe_acc'][s]:.1f}" for s in names) + " |")
    gap = (r["uhd"]["fine_detail_acc"] - r["pad336"]["fine_detail_acc"]) if len(names) == 2 else float("nan")
    return "\n".join([
        f"# The paper's claim in miniature (data.seed {report['budget']['seed']})", "",
        f"`{command}`: {report['wall_s'] / 60:.1f} min on this machine ({report['machine']}).", "",
        *lines, "",
        f"UHD minus pad336 on the fine lines: {gap:+.1f} points (target: >= +20, pad336 near chance).",
        f"Budget, the same for both: {json.dumps(report['budget'])}.", ""])


def _plot_rows(report: dict) -> list[dict]:
    """Long format for `dvc plots` (dvc.yaml's top-level plots: a bar per question kind and strategy)."""
    kinds = (("fine lines", "fine_detail_acc"), ("codes", "code_acc"), ("colour-shape", "coarse_acc"))
    return [{"question": f"{kind} / {strategy}", "accuracy": round(r[key], 1)}
            for kind, key in kinds for strategy, r in report["results"].items()]


def _coarse_chance(work: Path) -> str:
    """Chance on the coarse GQA questions: the majority answer's share (GQA's trivial baseline)."""
    from components.evaluation.benchmarks import ADAPTERS, benchmark_root, load_benchmark

    eval_root = work / "raw" / "synthetic" / "eval"
    coarse = [q for q in load_benchmark("gqa", eval_root) if q.metadata.get("category") != "fine_detail"]
    return f"{ADAPTERS['gqa'].baseline(coarse, benchmark_root('gqa', eval_root))['score']:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/uhd-fine-detail", help="data, layouts, runs (data reused)")
    parser.add_argument("--out-dir", default="reports/claim", help="claim.json, claim.md, claim.csv (seed suffix)")
    parser.add_argument("--params", default="params.yaml", help="the model (LLM, ViT, compressor) and data format")
    parser.add_argument("--train-scenes", type=int, default=32)
    parser.add_argument("--eval-scenes", type=int, default=12)
    parser.add_argument("--fine-line-scenes", type=int, default=256,
                        help="extra fine-tuning scenes asked only the fine-line question (SyntheticSpec)")
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=100, help="finetune optimizer steps")
    parser.add_argument("--lr", type=float, default=3e-4, help="finetune lr")
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--tune-vision", action="store_true", help="finetune also trains the ViT")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="answers are one word")
    parser.add_argument("--seed", type=int, default=0, help="data.seed and the training seed")
    parser.add_argument("--probe-pairs", type=int, default=40, help="scenes of the frozen-ViT linear probe")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset to train")
    args = parser.parse_args(argv)
    start, work = time.perf_counter(), Path(args.work) / f"seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    keys = ("train_scenes", "fine_line_scenes", "pretrain_steps", "pretrain_lr", "steps", "lr", "global_batch",
            "micro_batch", "seed", "tune_vision")
    report = {"budget": {k: getattr(args, k) for k in keys}, "pixel_probe_rms_h_vs_v": pixel_probe(),
              "prepare_s": prepare(work, args), "chance": 50.0, "results": {}}
    report["frozen_vit_probe_acc"] = feature_probe(args, work, pairs=args.probe_pairs)
    report["coarse_chance"] = _coarse_chance(work)
    print(f"pixel probe (RMS of horizontal - vertical, normalized): {report['pixel_probe_rms_h_vs_v']}", flush=True)
    print(f"frozen-ViT linear probe, % correct orientation (chance 50): {report['frozen_vit_probe_acc']}", flush=True)
    for strategy in args.strategies.split(","):
        model_dir, stats = train_strategy(work, strategy, args)
        report["results"][strategy] = {"train": stats, **evaluate(model_dir, work, strategy, args)}
        print(f"  {strategy}: " + json.dumps({k: v for k, v in report["results"][strategy].items() if k != "train"}),
              flush=True)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    report["machine"] = f"{os.cpu_count()} CPU cores, torch threads {__import__('torch').get_num_threads()}"
    command = "python -m benchmarks.fine_detail " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "claim" if args.seed == 0 else f"claim_seed{args.seed}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (out / f"{stem}.md").write_text(_table(report, command.strip()))
    with open(out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["question", "accuracy"])
        writer.writeheader()
        writer.writerows(_plot_rows(report))
    print((out / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
