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
import json
import sys
from pathlib import Path

from components.config import ModelConfig, Params, load_params
from components.inference import DEFAULT_MAX_NEW_TOKENS, ModelNotFound, UhdModel, alias_exists, load_model
from components.tracking.mlflow_logging import resolve_tracking_uri

DEFAULT_DIR = "models/finetune"
CHAMPION = "champion"


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


def default_source(params: Params, tracking_uri: str) -> tuple[str, str]:
    """(source, why): the registry champion when there is one, else the finetune DVC out, else ModelNotFound."""
    name = params.registry.model_name
    if alias_exists(name, CHAMPION, tracking_uri):
        return f"models:/{name}@{CHAMPION}", f"registry alias {CHAMPION} in {tracking_uri}"
    if (Path(DEFAULT_DIR) / "config.json").is_file():
        return DEFAULT_DIR, f"no models:/{name}@{CHAMPION} in {tracking_uri}; using the finetune stage's output"
    raise ModelNotFound(f"no model to use: models:/{name}@{CHAMPION} is not in the registry at {tracking_uri} and "
                        f"{DEFAULT_DIR}/ does not exist. Run `dvc repro finetune` (then `dvc repro` to evaluate and "
                        "register a champion), or pass --model SOURCE")


def open_model(args: argparse.Namespace) -> UhdModel:
    params = load_params(args.params) if Path(args.params).is_file() else Params()
    tracking_uri = resolve_tracking_uri(args.tracking_uri or params.tracking.uri)
    source, why = (args.model, "--model") if args.model else default_source(params, tracking_uri)
    print(f"model: {source} ({why})")
    model_cfg: ModelConfig = params.model
    local = Path(source).is_dir()
    # A directory carries no tokenizer: use the one training used (params); MLflow models bring their own.
    tok_dir = args.tokenizer_dir or (model_cfg.tokenizer_dir if local else None)
    tok_kind = args.tokenizer or (model_cfg.tokenizer if local else None)
    return load_model(source, tracking_uri, tokenizer=tok_kind, tokenizer_dir=tok_dir, device=args.device)


def answer_one(uhd: UhdModel, args: argparse.Namespace) -> int:
    layout = uhd.layout(args.image)
    print(f"layout: {layout.line()}")
    if args.show_layout:
        from components.slicing.overlay import describe

        print(describe(layout.layout))
    print(f"answer: {uhd.answer(args.image, args.question, max_new_tokens=args.max_new_tokens)}")
    return 0


def _rows(path: Path, image_root: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if "question" not in row:
            raise ValueError(f"{path}:{number}: no 'question' field")
        image = row.get("image")
        row["_image"] = str(image_root / image) if image else None  # absolute paths survive the join
        rows.append(row)
    return rows


def answer_file(uhd: UhdModel, args: argparse.Namespace) -> int:
    path = Path(args.questions)
    rows = _rows(path, Path(args.image_root) if args.image_root else path.parent)
    missing = [r["_image"] for r in rows if r["_image"] and not Path(r["_image"]).is_file()]
    if missing:
        print(f"uhd infer: {len(missing)} image(s) not found, e.g. {missing[0]}", file=sys.stderr)
        return 2
    answers = uhd.answer_batch([(r["_image"], r["question"]) for r in rows], batch_size=args.batch_size,
                               max_new_tokens=args.max_new_tokens)
    out = Path(args.out) if args.out else path.with_name(f"{path.stem}.answers.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for row, answer in zip(rows, answers, strict=True):
            image = row.pop("_image")
            layout = uhd.layout(image) if image else None
            row.update(answer=answer, model=uhd.source, grid=list(layout.grid) if layout else None,
                       num_tokens=layout.num_tokens if layout else 0)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} answers written to {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.image and not Path(args.image).is_file():
        print(f"uhd infer: no such image: {args.image}", file=sys.stderr)
        return 2
    if args.questions and not Path(args.questions).is_file():
        print(f"uhd infer: no such questions file: {args.questions}", file=sys.stderr)
        return 2
    try:
        uhd = open_model(args)
    except (ModelNotFound, ValueError) as err:  # ValueError: a tokenizer that does not fit the model
        print(f"uhd infer: {err}", file=sys.stderr)
        return 2
    return answer_file(uhd, args) if args.questions else answer_one(uhd, args)


if __name__ == "__main__":
    sys.exit(main())
