"""Training loader throughput (samples/s, 0 and 2 DataLoader workers) vs the tiny model's training step time.

Reads the `dvc repro` outputs (data/validated/<set>/valid.parquet, data/layouts/layouts.parquet, data/raw).
The loader does the real work of training: image decode + UHD slicing + normalisation + placeholder
expansion + right-padding collate, in the order the length-grouped sampler gives. The step is a plain torch
forward + backward + AdamW step of the tiny LLaVA-UHD model on the same batches (the stage's trainable modules),
so `loader_s_per_batch / step_s` says whether the loader can keep up (< 1: it can).

    python benchmarks/loader_throughput.py [--set pretrain] [--batches 8] [--micro-batch 2]
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from components.model.build import build_model, load_tokenizer  # noqa: E402
from components.training.collate import Collate  # noqa: E402
from components.training.dataset import TrainingSet  # noqa: E402
from components.training.loop import TrainConfig  # noqa: E402
from components.training.sampler import GlobalBatchSampler  # noqa: E402


def loader_rate(dataset, sampler_args, collate, workers: int, batches: int) -> tuple[float, int]:
    sampler = GlobalBatchSampler(**sampler_args)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    samples, start = 0, time.perf_counter()
    for _, batch in zip(range(batches), it, strict=False):
        samples += len(batch["ids"])
    return samples / (time.perf_counter() - start), samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data", help="folder holding raw/, validated/, layouts/")
    parser.add_argument("--set", default="pretrain", choices=["pretrain", "finetune"])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--tokenizer-dir", default="assets/tokenizers/llama")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    cfg = TrainConfig(str(data / "validated"), str(data / "layouts/layouts.parquet"), str(data / "raw"), "unused",
                      stage=args.set, tokenizer_dir=args.tokenizer_dir)
    tok = load_tokenizer(cfg.tokenizer, cfg.tokenizer_dir)
    model = build_model(cfg, tok)
    dataset = TrainingSet(cfg.validated_dir, cfg.layouts_path, cfg.raw_root, args.set, tok, model.config)
    sampler_args = {"lengths": dataset.lengths, "batch_size": args.micro_batch, "seed": 0, "order": "length_grouped"}
    collate = Collate(0)
    rates = {}
    for workers in (0, 2):
        rates[workers], n = loader_rate(dataset, sampler_args, collate, workers, args.batches)
        print(f"loader  workers={workers}  {rates[workers]:8.2f} samples/s  ({n} samples)")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=GlobalBatchSampler(**sampler_args),
                                         collate_fn=collate)
    times, samples = [], 0
    for k, batch in zip(range(args.batches + 1), loader, strict=False):
        inputs = {key: v for key, v in batch.items() if key != "ids"}
        start = time.perf_counter()
        model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if k:  # the first step warms up
            times.append(time.perf_counter() - start)
            samples += len(batch["ids"])
    step_rate = samples / sum(times)
    step_s = sum(times) / len(times)
    print(f"tiny model train step  {step_s * 1000:8.1f} ms/batch  = {step_rate:8.2f} samples/s")
    result = {"benchmark": "loader_throughput", "set": args.set, "micro_batch": args.micro_batch,
              "dataset": dataset.stats(), "loader_samples_per_s": {str(k): round(v, 3) for k, v in rates.items()},
              "step_ms": round(step_s * 1000, 2), "step_samples_per_s": round(step_rate, 3),
              "loader_over_step": {str(k): round(step_rate / v, 3) for k, v in rates.items()},
              "cpu_count": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
