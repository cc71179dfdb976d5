"""Right-padding collate: input_ids (pad id), labels (-100), attention_mask (0); pixels and sizes concatenated."""

from __future__ import annotations

import torch

from components.data.conversation import IGNORE_INDEX


class Collate:
    """A picklable collate_fn. `pad_token_id` pads input_ids (masked by attention_mask and labels anyway)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: list[dict]) -> dict:
        width = max(len(it["input_ids"]) for it in items)
        input_ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, it in enumerate(items):
            n = len(it["input_ids"])
            input_ids[i, :n], labels[i, :n], attention_mask[i, :n] = it["input_ids"], it["labels"], 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
                 "ids": [it["id"] for it in items]}
        pixels = [p for it in items for p in it["pixel_values"]]
        if pixels:
            batch["pixel_values"] = pixels
            batch["image_sizes"] = torch.tensor([s for it in items for s in it["image_sizes"]], dtype=torch.long)
        return batch
