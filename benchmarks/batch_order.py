"""What each batch order costs in padding: tokens a micro-batch computes for nothing, per order and split.

A micro-batch is right-padded to its longest sample (components/training/collate.py), so every sample costs the
longest one's tokens. For each order of components/training/sampler.py, over `--epochs` epochs of a real training
set (the validated set joined with its layouts, exactly what training reads: text + visual tokens per sample),
this prints the padding share (pad tokens / computed tokens) and the computed tokens relative to the real ones.
Baseline in the same run: `random` (no grouping at all).

    .venv/bin/python -m benchmarks.batch_order --data data --set finetune --micro-batch 2 --accumulation 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.config import load_params
from components.model.build import load_tokenizer, model_config
from components.training.dataset import TrainingSet
from components.training.loop import TrainConfig, sampler_lengths, stage_template
from components.training.sampler import ORDERS, GlobalBatchSampler


def padding(tokens: list[int], sampler: GlobalBatchSampler, epochs: int) -> dict:
    """Real and computed tokens of every rank's micro-batches over `epochs` epochs."""
    real = computed = 0
    for epoch in range(epochs):
        for batch in sampler.global_batches(epoch):
            for k in range(0, len(batch), sampler.batch_size):
                micro = [tokens[i] for i in batch[k:k + sampler.batch_size]]
                real, computed = real + sum(micro), computed + max(micro) * len(micro)
    return {"padding_share": round(1 - real / computed, 4), "computed_over_real": round(computed / real, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="folder holding raw/, validated/, layouts/")
    parser.add_argument("--params", default="params.yaml", help="the model, template and slicing of the run")
    parser.add_argument("--set", default="finetune", choices=["pretrain", "finetune"])
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    data = Path(args.data)
    cfg = TrainConfig.from_params(load_params(args.params), args.set, validated_dir=str(data / "validated"),
                                  layouts_path=str(data / "layouts/layouts.parquet"), raw_root=str(data / "raw"),
                                  output_dir="unused")
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    dataset = TrainingSet(cfg.validated_dir, cfg.layouts_path, cfg.raw_root, args.set, tokenizer,
                          model_config(cfg, tokenizer), source=cfg.source, template=stage_template(cfg),
                          max_length=cfg.max_length)
    tokens = [abs(n) for n in dataset.lengths]
    results = {}
    print(f"{args.set}: {len(tokens)} samples, {args.workers} workers x micro {args.micro_batch} x accumulation "
          f"{args.accumulation}, {args.epochs} epochs; tokens per sample {min(tokens)}-{max(tokens)}")
    print(f"{'order':<18}{'padding share':>15}{'computed / real':>17}")
    for order in ORDERS:
        results[order] = [padding(tokens, GlobalBatchSampler(sampler_lengths(dataset, order), args.micro_batch,
                                                             order=order, seed=seed, num_replicas=args.workers,
                                                             rank=0, accumulation=args.accumulation), args.epochs)
                          for seed in range(3)]
        share = sum(r["padding_share"] for r in results[order]) / 3
        ratio = sum(r["computed_over_real"] for r in results[order]) / 3
        results[order] = {"padding_share": round(share, 4), "computed_over_real": round(ratio, 4)}
        print(f"{order:<18}{share:>15.1%}{ratio:>17.3f}")
    print(json.dumps({"set": args.set, "samples": len(tokens), "micro_batch": args.micro_batch,
                      "workers": args.workers, "accumulation": args.accumulation, "epochs": args.epochs,
                      "seeds": 3, **results}))


if __name__ == "__main__":
    main()
