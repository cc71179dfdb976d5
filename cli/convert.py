"""`uhd convert SRC DST --format {llava,llava-hf,llava-onevision-hf,llava-onevision} [--vision-tower DIR]`: a
released LLaVA-family checkpoint directory -> a project model directory (save_pretrained safetensors, config.json
with the slicing/compressor it was trained with, its tokenizer with `<image>`, conversion.json).

    uhd convert llava-1.5-7b-hf models/llava-1.5-7b --format llava-hf
    uhd convert llava-v1.5-13b models/llava-1.5-13b --format llava --vision-tower clip-vit-large-patch14-336
    uhd infer IMAGE "question" --model models/llava-1.5-13b

SRC is a local directory (e.g. `huggingface-cli download llava-hf/llava-1.5-7b-hf --local-dir DIR`); formats and
what each maps: components/model/convert/__init__.py.
"""

from __future__ import annotations

import argparse
import sys

from components.model.convert import CONVERSION_RECORD, FORMATS, ConversionError, convert_to_directory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uhd convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="the released checkpoint directory")
    parser.add_argument("dst", help="the model directory to write (new or empty)")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--vision-tower", help="--format llava: a local CLIP save_pretrained directory "
                        "(e.g. openai/clip-vit-large-patch14-336), which those checkpoints do not hold")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        dst = convert_to_directory(args.src, args.dst, args.format, args.vision_tower)
    except (ConversionError, OSError) as err:  # one line, no traceback
        print(f"uhd convert: {err}", file=sys.stderr)
        return 2
    import json

    record = json.loads((dst / CONVERSION_RECORD).read_text())
    for path in sorted(p for p in dst.iterdir() if p.is_file()):
        print(f"wrote {path}")
    for note in record["notes"]:
        print(f"note: {note}")
    count = record["parameters"]
    short = f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"
    print(f"parameters: {count:,} ({short}, {record['dtype']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
