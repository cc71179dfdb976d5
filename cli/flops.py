"""`uhd flops`: inference TFLOPs per image size, side by side, and (with --memory) params and training memory.

    uhd flops --sizes 336x336,672x1008,1920x1080
    uhd flops --model llava-uhd-7b --text-tokens 48
    uhd flops --paper                  # the paper's figures vs ours
    uhd flops --memory --num-gpus 8    # parameter counts + ZeRO-2/3 memory per GPU on A100 40/80 GB

A column is `model[:compressor]`; the default set is LLaVA-1.5, LLaVA-UHD (resampler), LLaVA-UHD (mlp)
and OneVision AnyRes. The rows come from components.model.flops_tables, the numbers from
components.model.flops (formula in its docstring); this module parses the arguments and prints.
"""

from __future__ import annotations

import argparse
import json

from components.model.architectures import MODELS, closed_form_parameter_counts
from components.model.flops import ATTENTION_MODES, LOGITS_MODES, PAPER_TEXT_TOKENS, VIT_LAYER_MODES, paper_comparison
from components.model.flops_tables import column_label, default_columns, flops_table, memory_rows, parse_column

DEFAULT_SIZES = "336x336,672x672,672x1008,1008x672,1344x336,1024x768,1920x1080,4032x3024"


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def _print_flops(rows, columns) -> None:
    labels = [column_label(*c) for c in columns]
    width = max(22, *(len(lab) for lab in labels))
    print("TFLOPs per image (tokens = visual tokens the LLM sees, ViT = vision-tower passes)")
    print(f"{'size':>10} " + " ".join(f"{lab:>{width}}" for lab in labels))
    print(f"{'':>10} " + " ".join(f"{'tokens  ViT   TFLOPs':>{width}}" for _ in labels))
    by_size: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_size.setdefault(r["size"], {})[r["column"]] = r
    for size, cells in by_size.items():
        parts = []
        for lab in labels:
            c = cells[lab]
            parts.append(f"{c['visual_tokens']:>6d} {c['vit_passes']:>4d} {c['tflops']:>8.2f}".rjust(width))
        print(f"{size:>10} " + " ".join(parts))


def _print_paper(options) -> None:
    print(f"Paper figures (text_tokens={options['text_tokens']}, attention={options['attention']}, "
          f"logits={options['logits']}, vit_layers={options['vit_layers']})")
    for r in paper_comparison(**options):
        print(f"  {r['figure']:<42} paper {r['paper']:>7.2f}  ours {r['ours']:>7.2f}  {r['error'] * 100:+6.1f}%")


def _print_memory(models, rows, num_gpus, seq_len) -> None:
    print("\nParameters (exact, from the architecture configs)")
    print(f"{'model':<20} {'vision':>13} {'compressor':>13} {'llm':>15} {'total':>15} {'train PT':>13} "
          f"{'train FT':>15}")
    for model in models:
        c = closed_form_parameter_counts(model)
        print(f"{model:<20} {c.vision:>13,} {c.compressor:>13,} {c.llm:>15,} {c.total:>15,} "
              f"{c.trainable('pretrain'):>13,} {c.trainable('finetune'):>15,}")
    print(f"\nTraining memory per GPU, GiB ({num_gpus} GPUs, seq {seq_len}, bf16, gradient checkpointing; "
          "formula: components.model.flops.training_memory_gb)")
    print(f"{'model':<20} {'stage':<9} {'mb':>3} {'ZeRO':>4} {'offload':>7} {'weights':>8} {'grads':>6} {'optim':>6} "
          f"{'act':>6} {'total':>7} {'40GB':>5} {'80GB':>5} {'maxmb40':>8} {'maxmb80':>8} {'CPU/rank':>8}")
    for r in rows:
        print(f"{r['model']:<20} {r['stage']:<9} {r['micro_batch']:>3} {r['zero_stage']:>4} "
              f"{'yes' if r['offload'] else 'no':>7} {r['weights']:>8.1f} {r['gradients']:>6.1f} "
              f"{r['optimizer']:>6.1f} {r['activations']:>6.1f} {r['total']:>7.1f} "
              f"{'fits' if r['fits_40gb'] else 'OOM':>5} {'fits' if r['fits_80gb'] else 'OOM':>5} "
              f"{r['max_mb_40gb']:>8} {r['max_mb_80gb']:>8} {r['cpu_offload_per_rank']:>8.1f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uhd flops", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated WIDTHxHEIGHT list")
    p.add_argument("--model", default="llava-uhd-13b", choices=sorted(MODELS),
                   help="main model: columns = its LLaVA-1.5 baseline, it, it with the MLP, OneVision")
    p.add_argument("--columns", help="explicit comma-separated model[:compressor] columns (overrides --model)")
    p.add_argument("--text-tokens", type=int, default=PAPER_TEXT_TOKENS,
                   help=f"prompt tokens added to every image (default {PAPER_TEXT_TOKENS}: the paper's accounting)")
    p.add_argument("--attention", choices=ATTENTION_MODES, default="causal")
    p.add_argument("--logits", choices=LOGITS_MODES, default="all")
    p.add_argument("--vit-layers", choices=VIT_LAYER_MODES, default="full")
    p.add_argument("--paper", action="store_true", help="also print the paper's TFLOPs figures next to ours")
    p.add_argument("--memory", action="store_true", help="also print parameter counts and training memory")
    p.add_argument("--num-gpus", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batch-pretrain", type=int, default=32, help="per GPU (paper scripts: 32)")
    p.add_argument("--micro-batch-finetune", type=int, default=16, help="per GPU (arXiv scripts: 16)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sizes = [_parse_size(s) for s in args.sizes.split(",") if s.strip()]
        columns = ([parse_column(c.strip()) for c in args.columns.split(",") if c.strip()]
                   if args.columns else default_columns(args.model))
    except (argparse.ArgumentTypeError, ValueError) as err:
        print(f"uhd flops: {err}")
        return 2
    options = {"text_tokens": args.text_tokens, "attention": args.attention, "logits": args.logits,
               "vit_layers": args.vit_layers}
    rows = flops_table(sizes, columns, **options)
    out: dict = {"flops": rows}
    if args.paper:
        out["paper"] = paper_comparison(**options)
    mem_models = list(dict.fromkeys(name for name, _ in columns))
    if args.memory:
        micro = {"pretrain": args.micro_batch_pretrain, "finetune": args.micro_batch_finetune}
        out["params"] = {m: closed_form_parameter_counts(m).as_dict() for m in mem_models}
        out["memory"] = memory_rows(mem_models, args.num_gpus, args.seq_len, micro)
    if args.json:
        print(json.dumps(out, indent=1, default=list))
        return 0
    _print_flops(rows, columns)
    if args.paper:
        print()
        _print_paper(options)
    if args.memory:
        _print_memory(mem_models, out["memory"], args.num_gpus, args.seq_len)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
