"""`uhd infer`: answer a question about an image (or a JSONL file of them) with a trained LLaVA-UHD.

    uhd infer IMAGE "question" [--model SOURCE] [--max-new-tokens N] [--tracking-uri URI] [--show-layout]
    uhd infer --questions FILE.jsonl [--out ANSWERS.jsonl] [--batch-size 8] ...

SOURCE: models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-ID, an MLflow run id or a save_pretrained directory.
Default: models:/<registry.model_name>@champion when the registry has it, else models/finetune (the DVC out).
Questions file: one JSON object per line with `image` (relative paths: to --image-root, default the file's
folder; null for text-only) and `question`; each answers line is the input line plus `answer`, `grid`,
`num_tokens` and `model`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.config import Params, load_params
from components.inference import DEFAULT_MAX_NEW_TOKENS, ModelNotFound, UhdModel, load_model
from components.inference.questions import answer_questions, read_questions, write_answers
from components.inference.sources import default_source
from components.model.build import has_saved_tokenizer
from components.slicing.image_files import decode_image_file
from components.tracking.mlflow_logging import resolve_tracking_uri

DEFAULT_DIR = "models/finetune"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="uhd infer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", help="image file (omit with --questions)")
    parser.add_argument("question", nargs="?")
    parser.add_argument("--model", help="registry URI, logged-model URI, run id or directory (default: see above)")
    parser.add_argument("--questions", help="JSONL of {image, question} lines: batch mode")
    parser.add_argument("--out", help="answers JSONL (default: <questions stem>.answers.jsonl beside it)")
    parser.add_argument("--image-root", help="base of relative image paths in --questions (default: its folder)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--tracking-uri", help="default: params tracking.uri, $MLFLOW_TRACKING_URI, ./mlflow.db")
    parser.add_argument("--tokenizer", help="tokenizer kind for a directory model (default: params model.tokenizer)")
    parser.add_argument("--tokenizer-dir", help="tokenizer assets for a directory model (default: params)")
    parser.add_argument("--params", default="params.yaml", help="read for the defaults above when it exists")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--show-layout", action="store_true", help="print the full slice plan, not one line")
    args = parser.parse_args(argv)
    if bool(args.questions) == bool(args.image and args.question):
        parser.error("give IMAGE and QUESTION, or --questions FILE.jsonl")
    return args


def open_model(args: argparse.Namespace) -> UhdModel:
    params = load_params(args.params) if Path(args.params).is_file() else Params()
    tracking_uri = resolve_tracking_uri(args.tracking_uri or params.tracking.uri)
    if args.model:
        source, why = args.model, "--model"
    else:
        source, why = default_source(params.registry.model_name, tracking_uri, DEFAULT_DIR)
    print(f"model: {source} ({why})")
    # A trained directory carries no tokenizer: use the one training used (params). MLflow models and converted
    # checkpoints (`uhd convert`) bring their own.
    local = Path(source).is_dir() and not has_saved_tokenizer(source)
    tok_dir = args.tokenizer_dir or (params.model.tokenizer_dir if local else None)
    tok_kind = args.tokenizer or (params.model.tokenizer if local else None)
    return load_model(source, tracking_uri, tokenizer=tok_kind, tokenizer_dir=tok_dir, device=args.device)


def answer_one(uhd: UhdModel, args: argparse.Namespace) -> int:
    layout = uhd.layout(args.image)  # the file was checked (decoded) before the model was loaded
    print(f"layout: {layout.line()}")
    if args.show_layout:
        from components.slicing.overlay import describe

        print(describe(layout.layout))
    print(f"answer: {uhd.answer(args.image, args.question, max_new_tokens=args.max_new_tokens)}")
    return 0


def answer_file(uhd: UhdModel, args: argparse.Namespace) -> int:
    path = Path(args.questions)
    entries = read_questions(path, Path(args.image_root) if args.image_root else path.parent)
    records = answer_questions(uhd, entries, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    out = write_answers(records, answers_path(args))
    errors = [r for r in records if "error" in r]
    print(f"{len(records) - len(errors)} answers written to {out}")
    for record in errors:
        print(f"uhd infer: {path}:{record['line']}: {record['error']} (an error row in {out})", file=sys.stderr)
    return 1 if errors else 0


def answers_path(args: argparse.Namespace) -> Path:
    path = Path(args.questions)
    return Path(args.out) if args.out else path.with_name(f"{path.stem}.answers.jsonl")


def check_inputs(args: argparse.Namespace) -> None:
    """What can be checked before the model is loaded (seconds): the image, the question's text, the files."""
    if args.image:
        decode_image_file(args.image)
        try:
            args.question.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the question is not valid UTF-8 text (undecodable bytes on the command line)") from None
    if args.questions:
        if not Path(args.questions).is_file():
            raise ValueError(f"no such questions file: {args.questions}")
        if answers_path(args).is_dir():
            raise ValueError(f"--out {answers_path(args)} is a directory: give a file path for the answers")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_inputs(args)
    except ValueError as err:  # UnusableImage included: one line, exit 2, before any model is loaded
        print(f"uhd infer: {err}", file=sys.stderr)
        return 2
    try:
        uhd = open_model(args)
    except (ModelNotFound, ValueError) as err:  # ValueError: a tokenizer that does not fit the model
        print(f"uhd infer: {err}", file=sys.stderr)
        return 2
    return answer_file(uhd, args) if args.questions else answer_one(uhd, args)


if __name__ == "__main__":
    sys.exit(main())
