"""The paper's claim in miniature: UHD slicing against the pad336 baseline on fine-detail questions.

The embedded GQA benchmark holds questions whose answer only exists at high resolution (category
"fine_detail", ids "fd...": "Are the fine lines in the background horizontal or vertical?", answers
balanced, chance 50%). The lines have a 4-6 px period, which pad336's antialiased downscale to 336x336
averages to the same flat colour for both answers, while UHD's slices (near native resolution) keep them.

Steps, all with the pipeline's own code: the embedded data is generated into --work by pipelines.download
(reused when present), validated by `pipelines.validate --stage` and laid out by pipelines.layouts once per
strategy; then, for each strategy, components.training.loop.train runs pretrain then finetune (single
process, no Ray) with the SAME steps, batch, lr and seed, the result is exported and answers the GQA
questions through components.evaluation.runner.run_benchmark, scored by the GQA adapter per subset. The
pixel probe measures what each strategy's encoded images retain of the lines (the RMS difference between a
scene drawn with horizontal and the same scene with vertical lines, normalized units).

A frozen-ViT linear probe tells whether the orientation is readable from each strategy's own vision features.
The data adds --fine-line-scenes fine-tuning scenes asked only the fine-line question (SyntheticSpec).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.fine_detail [--steps 300] [--out reports/fine_detail.json]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import yaml

STRATEGIES = ("uhd", "pad336")


def write_params(work: Path, args) -> Path:
    """params.yaml with the data size of this run; one copy per strategy (the layouts stage reads slicing)."""
    base = yaml.safe_load(Path(args.params).read_text())
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
    raw, stamp = work / "raw", {"train_scenes": args.train_scenes, "eval_scenes": args.eval_scenes,
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


def train_strategy(work: Path, strategy: str, args) -> tuple[Path, dict]:
    """pretrain (compressor) then finetune (compressor + LLM) with this run's budget; the exported model dir."""
    from components.training.export import export_checkpoint
    from components.training.loop import TrainConfig, train

    out, stats, init = work / "runs" / strategy, {}, None
    for stage, steps, lr in (("pretrain", args.pretrain_steps, args.pretrain_lr), ("finetune", args.steps, args.lr)):
        cfg = TrainConfig(
            validated_dir=str(work / "validated"), layouts_path=str(work / f"layouts_{strategy}.parquet"),
            raw_root=str(work / "raw"), output_dir=str(out / stage), stage=stage, strategy=strategy,
            preset="uhd-arxiv" if strategy == "uhd" else strategy, steps=steps, global_batch=args.global_batch,
            micro_batch=args.micro_batch, lr=lr, warmup_ratio=0.03, seed=args.seed, init_from=init,
            tokenizer_dir=str(Path(args.tokenizer_dir).resolve()), tune_vision=args.tune_vision,
            vision_hidden=args.vision_hidden, llm_hidden=args.llm_hidden)
        if steps <= 0:
            continue
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            metrics = train(cfg)
            init = str(export_checkpoint(cfg, Path(cfg.output_dir) / "checkpoints", out / f"{stage}_model"))
        losses = metrics["losses"]
        stats[stage] = {"steps": steps, "wall_s": round(time.perf_counter() - t0, 1),
                        "first_loss": round(losses[0], 3), "last_loss": round(float(np.mean(losses[-5:])), 3),
                        "tokens_per_s": round(metrics["tokens_per_s"], 1)}
        print(f"  {strategy} {stage}: {stats[stage]}", flush=True)
    return Path(init), stats


def evaluate(model_dir: Path, work: Path, strategy: str, args) -> dict:
    """GQA answers through the eval runner; accuracy of the fine-detail and the other questions apart."""
    from components.evaluation.benchmarks import ADAPTERS, benchmark_root, load_benchmark
    from components.evaluation.runner import predictions, run_benchmark
    from components.model.build import load_saved_model, load_tokenizer_for

    model = load_saved_model(model_dir)
    tokenizer = load_tokenizer_for(model, "llama", args.tokenizer_dir)
    eval_root = work / "raw" / "synthetic" / "eval"
    questions = load_benchmark("gqa", eval_root)
    answers = work / "runs" / strategy / "gqa_answers.jsonl"
    answers.unlink(missing_ok=True)
    t0 = time.perf_counter()
    run_benchmark(model, tokenizer, questions, answers, batch_size=8, max_new_tokens=args.max_new_tokens)
    wall, preds = time.perf_counter() - t0, predictions(answers)
    fine = [q for q in questions if q.metadata.get("category") == "fine_detail"]
    other = [q for q in questions if q.metadata.get("category") != "fine_detail"]
    adapter, root = ADAPTERS["gqa"], benchmark_root("gqa", eval_root)
    from PIL import Image

    tokens = [model.plan(*Image.open(q.image).size).num_tokens for q in fine]
    said = {}
    for q in fine:
        said[preds[q.uid]] = said.get(preds[q.uid], 0) + 1
    return {"fine_detail_acc": adapter.score(fine, preds, root)["accuracy"], "n_fine": len(fine),
            "fine_detail_forced_choice_acc": forced_choice(model, tokenizer, fine, root),
            "other_gqa_acc": adapter.score(other, preds, root)["accuracy"], "n_other": len(other),
            "visual_tokens_mean": float(np.mean(tokens)), "eval_wall_s": round(wall, 1), "fine_answers": said}


def forced_choice(model, tokenizer, fine: list, root: Path) -> float:
    """Secondary measure, not the benchmark's score: % of fine-detail questions where the model gives the right
    orientation a higher next-token logit than the wrong one, at the runner's own prompt and image input."""
    import torch

    from components.data.synthetic_images import LINES
    from components.model.processor import UhdProcessor
    from components.slicing.pixels import load_image

    gold = json.loads((root / "testdev_balanced_questions.json").read_text())
    processor, ids = UhdProcessor(tokenizer, model), [tokenizer.convert_tokens_to_ids("\u2581" + a) for a in LINES]
    right = 0
    with torch.no_grad():
        for q in fine:
            batch = processor.prompt_batch([q.prompt_text], [load_image(q.image)])
            logits = model(**batch).logits[0, -1, ids]
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


def feature_probe(args, pairs: int = 40, folds: int = 5) -> dict:
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
    y, tokenizer, out = np.tile([1.0, -1.0], pairs), load_tokenizer("llama", args.tokenizer_dir), {}
    for strategy in STRATEGIES:
        preset = "uhd-arxiv" if strategy == "uhd" else strategy
        cfg = TrainConfig("", "", "", "", stage="finetune", strategy=strategy, preset=preset, seed=args.seed,
                          vision_hidden=args.vision_hidden, llm_hidden=args.llm_hidden)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/uhd-fine-detail", help="data, layouts, runs (data reused)")
    parser.add_argument("--out", default="reports/fine_detail.json")
    parser.add_argument("--params", default="params.yaml", help="base params; the data size is set below")
    parser.add_argument("--train-scenes", type=int, default=64)
    parser.add_argument("--eval-scenes", type=int, default=12)
    parser.add_argument("--fine-line-scenes", type=int, default=256,
                        help="extra fine-tuning scenes asked only the fine-line question (SyntheticSpec)")
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=300, help="finetune optimizer steps")
    parser.add_argument("--lr", type=float, default=5e-3, help="finetune lr")
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--vision-hidden", type=int, default=32)
    parser.add_argument("--llm-hidden", type=int, default=64)
    parser.add_argument("--tune-vision", action="store_true", help="finetune also trains the ViT")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="answers are one word")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset to train")
    parser.add_argument("--tokenizer-dir", default="assets/tokenizers/llama")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    keys = ("train_scenes", "fine_line_scenes", "pretrain_steps", "pretrain_lr", "steps", "lr", "global_batch",
            "micro_batch", "seed", "tune_vision", "vision_hidden", "llm_hidden")
    report = {"budget": {k: getattr(args, k) for k in keys},
              "pixel_probe_rms_h_vs_v": pixel_probe(), "frozen_vit_probe_acc": feature_probe(args),
              "prepare_s": prepare(work, args), "chance": 50.0,
              "results": {}}
    print(f"pixel probe (RMS of horizontal - vertical, normalized): {report['pixel_probe_rms_h_vs_v']}", flush=True)
    print(f"frozen-ViT linear probe, % correct orientation (chance 50): {report['frozen_vit_probe_acc']}", flush=True)
    for strategy in args.strategies.split(","):
        model_dir, stats = train_strategy(work, strategy, args)
        report["results"][strategy] = {"train": stats, **evaluate(model_dir, work, strategy, args)}
    print(f"{'strategy':<8} {'vis tok':>8} {'train s':>8} {'fine-detail acc':>16} {'other GQA acc':>14}")
    for strategy, r in report["results"].items():
        wall = sum(s["wall_s"] for s in r["train"].values())
        print(f"{strategy:<8} {r['visual_tokens_mean']:>8.1f} {wall:>8.1f} "
              f"{r['fine_detail_acc']:>9.1f} (n={r['n_fine']}) {r['other_gqa_acc']:>7.1f} (n={r['n_other']})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
