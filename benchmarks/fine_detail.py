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

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.fine_detail [--steps 150] [--out reports/fine_detail.json]
"""

from __future__ import annotations

import argparse
import contextlib
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
    base["data"]["synthetic"].update(train_scenes=args.train_scenes, eval_scenes=args.eval_scenes)
    base["layouts"]["workers"] = 1  # 2 shared cores: no process pool
    base["validate"]["workers"] = 1
    for strategy in STRATEGIES:
        params = json.loads(json.dumps(base))
        params["slicing"]["strategy"] = strategy
        (work / f"params_{strategy}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work / "params_uhd.yaml"


def prepare(work: Path, args) -> dict:
    """download -> validate -> layouts (per strategy), as the DVC stages run them; seconds per stage."""
    from pipelines import download, layouts, validate

    params = write_params(work, args)
    times, quiet = {}, contextlib.redirect_stdout(io.StringIO())
    raw = work / "raw"
    if not (raw / "manifest.parquet").exists():
        t0 = time.perf_counter()
        with quiet:
            assert download.main(["--params", str(params), "--raw", str(raw),
                                  "--manifest", str(raw / "manifest.parquet")]) == 0
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
    from components.model.modeling import LlavaUhdForConditionalGeneration
    from components.training.loop import load_tokenizer

    model = LlavaUhdForConditionalGeneration.from_pretrained(str(model_dir)).eval()
    tokenizer = load_tokenizer("llama", args.tokenizer_dir)
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
            "other_gqa_acc": adapter.score(other, preds, root)["accuracy"], "n_other": len(other),
            "visual_tokens_mean": float(np.mean(tokens)), "eval_wall_s": round(wall, 1), "fine_answers": said}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/uhd-fine-detail", help="data, layouts, runs (data reused)")
    parser.add_argument("--out", default="reports/fine_detail.json")
    parser.add_argument("--params", default="params.yaml", help="base params; the data size is set below")
    parser.add_argument("--train-scenes", type=int, default=64)
    parser.add_argument("--eval-scenes", type=int, default=12)
    parser.add_argument("--pretrain-steps", type=int, default=0)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=150, help="finetune optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="finetune lr")
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--vision-hidden", type=int, default=32)
    parser.add_argument("--llm-hidden", type=int, default=64)
    parser.add_argument("--tune-vision", action="store_true", help="finetune also trains the ViT")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="answers are one word")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated subset to train")
    parser.add_argument("--tokenizer-dir", default="tests/assets/llama_tokenizer")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = {"budget": {k: getattr(args, k) for k in ("train_scenes", "pretrain_steps", "pretrain_lr", "steps",
                                                       "lr", "global_batch", "micro_batch", "seed", "tune_vision",
                                                       "vision_hidden", "llm_hidden")},
              "pixel_probe_rms_h_vs_v": pixel_probe(), "prepare_s": prepare(work, args), "chance": 50.0,
              "results": {}}
    print(f"pixel probe (RMS of horizontal - vertical, normalized): {report['pixel_probe_rms_h_vs_v']}", flush=True)
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
