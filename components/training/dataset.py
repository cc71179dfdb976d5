"""A map-style dataset over one validated training set, joined with the layouts table on the image path.

At construction (main process, once): every conversation is tokenized with the set's template, the image
row is joined with its layout (its `num_tokens` is READ from the layouts table, never recomputed), samples
that cannot fit `max_length` without cutting the image (or that lose all supervision, or have no layout) are
dropped with a counted reason in `self.skipped` (nothing is dropped silently). Two lengths per sample feed the
sampler (negative for text-only samples, LLaVA's modality convention): `lengths`, text tokens + visual tokens
(what a micro-batch pads to), and `modality_lengths`, LLaVA's word counts without image tokens (what its
modality-grouped order balances).

In `__getitem__` (DataLoader workers): the image is decoded, resized as the training code does when
`slicing.train_time` says so (components/slicing/train_time.py: the same seeded per-path decision the layouts stage
took), and sliced with the processor's code (`UhdProcessor.process_image`, planned by the model config's `plan`,
overview only when the config says so); the single placeholder is expanded to `num_tokens` copies of
`config.image_token_id` (labels -100 there). The processor's count must equal the layouts table's: a mismatch
(layouts computed for another slicing / compressor / train-time config) raises.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from components.compression import COMPRESSORS
from components.data.catalog import TRAINING_SETS
from components.data.conversation import (
    ContextTooLong,
    ConversationError,
    encode_conversation,
    expand_image_labels,
    expand_image_placeholders,
)
from components.model.modeling import LlavaUhdForConditionalGeneration
from components.model.processor import UhdProcessor
from components.slicing.layout import visual_token_count
from components.slicing.pixels import load_image, resize_image
from components.slicing.train_time import TrainTimeResize

DEFAULT_TEMPLATES = {"pretrain": "plain", "finetune": "vicuna_v1"}


class SlicingPlanner:
    """The model's `plan` without the model's weights: picklable into DataLoader workers."""

    plan = LlavaUhdForConditionalGeneration.plan  # only reads self.config: one slicing code path

    def __init__(self, config):
        self.config = config


class TrainingSet(torch.utils.data.Dataset):
    """One validated set (`pretrain` | `finetune`) of a data source, ready for the model's forward."""

    def __init__(self, validated_dir: str | Path, layouts_path: str | Path, raw_root: str | Path, set_name: str,
                 tokenizer, model_config, source: str = "synthetic", template: str | None = None,
                 max_length: int = 2048, end_of_turn: str | None = None, limit: int | None = None,
                 train_time: TrainTimeResize | None = None):
        spec = {s.name: s for s in TRAINING_SETS[source]}.get(set_name)
        if spec is None:
            raise KeyError(f"no training set {set_name!r} for source {source!r}")
        self.set_name, self.max_length = set_name, max_length
        self.template = template or DEFAULT_TEMPLATES[set_name]
        self.image_root = Path(raw_root) / spec.image_root
        self.image_prefix = spec.image_root  # + "/" + image = the layouts table's path, the train-time draw's key
        self.train_time = train_time or TrainTimeResize()
        self.preset = model_config.preset
        self.processor = UhdProcessor(None, SlicingPlanner(model_config))  # pixels only: no tokenizer in workers
        self.image_token_id = int(model_config.image_token_id)
        rows = pq.read_table(Path(validated_dir) / set_name / "valid.parquet", columns=["id", "image", "conversations"])
        layouts = _layout_tokens(layouts_path, model_config)
        self.skipped: Counter = Counter()
        self.truncated = 0
        self.samples: list[tuple[str, str | None, int, np.ndarray, np.ndarray]] = []
        self.modality_lengths: list[int] = []
        ids, images, convs = (rows.column(c).to_pylist() for c in ("id", "image", "conversations"))
        for sample_id, image, conversations in list(zip(ids, images, convs, strict=True))[:limit]:
            n_visual = 0
            if image is not None:
                key = f"{self.image_prefix}/{image}"
                if key not in layouts:
                    self.skipped["no_layout"] += 1
                    continue
                n_visual = layouts[key]
            try:
                enc = encode_conversation(conversations, tokenizer, self.template, max_length,
                                          num_visual_tokens=max(n_visual, 1), end_of_turn=end_of_turn,
                                          has_image=image is not None)
            except ContextTooLong:
                self.skipped["too_long"] += 1
                continue
            except ConversationError as err:
                self.skipped[type(err).__name__] += 1
                continue
            self.truncated += bool(enc.num_truncated)  # kept, text cut from the right: counted too
            self.samples.append((sample_id, image, n_visual, np.asarray(enc.input_ids, np.int64),
                                 np.asarray(enc.labels, np.int64)))
            words = _word_length(conversations)
            self.modality_lengths.append(words if image is not None else -words)
        if not self.samples:
            raise ValueError(f"{set_name}: no usable sample (skipped: {dict(self.skipped)})")
        self.lengths = [(len(s[3]) - 1 + s[2]) if s[1] is not None else -len(s[3]) for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def stats(self) -> dict:
        return {"samples": len(self.samples), "skipped": dict(self.skipped), "truncated": self.truncated}

    def __getitem__(self, index: int) -> dict:
        sample_id, image, n_visual, input_ids, labels = self.samples[index]
        item = {"id": sample_id, "pixel_values": [], "image_sizes": []}
        if image is None:
            item.update(input_ids=torch.from_numpy(input_ids), labels=torch.from_numpy(labels))
            return item
        processed = self.processor.process_image(self._train_picture(image))
        if processed.num_tokens != n_visual:
            raise ValueError(
                f"{sample_id} ({image}): the layouts table says {n_visual} visual tokens, the model's slicing config "
                f"gives {processed.num_tokens} (re-run the layouts stage with the model's slicing/compressor)")
        item["input_ids"] = torch.tensor(expand_image_placeholders(input_ids.tolist(), [n_visual], self.image_token_id))
        item["labels"] = torch.tensor(expand_image_labels(labels.tolist(), input_ids.tolist(), [n_visual]))
        item["pixel_values"], item["image_sizes"] = processed.pixels, [processed.size]
        return item

    def _train_picture(self, image: str):
        """The decoded image, resized first when the train-time handling picks it (`TrainTimeResize.size`)."""
        picture = load_image(self.image_root / image)
        size = self.train_time.size(f"{self.image_prefix}/{image}", *picture.size, self.preset)
        return resize_image(picture, size) if size else picture


def _word_length(conversations: list[dict]) -> int:
    """LLaVA's `modality_lengths` of one sample: the words of its turns (the `<image>` marker is one word, its
    visual tokens none); at least 1, so an empty conversation keeps its modality's sign."""
    return max(1, sum(len(turn["value"].split()) for turn in conversations))


def _layout_tokens(layouts_path: str | Path, model_config) -> dict[str, int]:
    """path -> visual tokens under the model's compressor, spatial schema and overview-only switch, for the rows
    laid out with its (strategy, preset) and without error (components.slicing.layout.visual_token_count)."""
    strategy, preset = model_config.strategy, model_config.preset
    overview_only = bool(getattr(model_config, "overview_only", False))
    counts = [f"overview_tokens_{c}" for c in COMPRESSORS] if overview_only else [f"tokens_{c}" for c in COMPRESSORS]
    names = pq.ParquetFile(layouts_path).schema_arrow.names
    if overview_only and counts[0] not in names:
        raise ValueError(f"{layouts_path} has no overview-only counts: re-run the layouts stage with "
                         "slicing.train_time.pretrain_overview_only: true")
    columns = ["path", "strategy", "preset", "error", "schema_separators", *counts]
    table = pq.read_table(layouts_path, columns=columns).to_pylist()
    rows = [r for r in table if r["error"] is None and r["strategy"] == strategy and r["preset"] == preset]
    if table and not rows:
        found = sorted({(r["strategy"], r["preset"]) for r in table})
        raise ValueError(f"{layouts_path}: no layout for strategy {strategy!r} preset {preset!r} (has {found})")
    return {r["path"]: visual_token_count(r, model_config.compressor, model_config.spatial_schema, overview_only)
            for r in rows}
