"""The vision tower: a transformers CLIP (or SigLIP) vision model that encodes variable-size slices.

Each slice keeps its own patch grid: the ViT's square position table is bicubically interpolated to the
slice's (rows, cols) with align_corners=False and the CLS position kept, which is transformers'
`interpolate_pos_encoding=True` path, the same arithmetic as the reference `adapt_clip` (uhd.md §3.2).

Features come from a chosen hidden layer (the second-to-last by default, as LLaVA). Rather than running
the whole tower and discarding its last layer(s), the encoder is cut after that layer: the output is
identical and the unused layers cost nothing.

Variable-size images of a batch are grouped by shape and each group runs as one batched forward, instead
of one ViT call per slice (benchmarks/vision_batching.py measures the gain).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel


class VisionTower(nn.Module):
    def __init__(self, config: CLIPVisionConfig | SiglipVisionConfig, feature_layer: int = -2,
                 trainable: bool = False):
        super().__init__()
        if isinstance(config, SiglipVisionConfig):
            self.model, self.has_cls = SiglipVisionModel(config), False
        elif isinstance(config, CLIPVisionConfig):
            self.model, self.has_cls = CLIPVisionModel(config), True
        else:
            raise TypeError(f"vision tower must be a CLIP or SigLIP vision config, got {type(config).__name__}")
        self.patch_size = config.patch_size
        self.hidden_size = config.hidden_size
        self.feature_layer = feature_layer
        self._truncate(feature_layer, config.num_hidden_layers)
        self.set_trainable(trainable)

    def _truncate(self, feature_layer: int, num_layers: int) -> None:
        """Keep the encoder layers up to the feature layer (hidden_states[feature_layer] of the full tower)."""
        keep = num_layers + 1 + feature_layer if feature_layer < 0 else feature_layer
        if not 1 <= keep <= num_layers:
            raise ValueError(f"feature_layer {feature_layer} is outside a {num_layers}-layer tower")
        vision = getattr(self.model, "vision_model", self.model)  # transformers 5 flattened the wrapper
        vision.encoder.layers = vision.encoder.layers[:keep]
        # SigLIP's attention-pooling head is never used for LLaVA features.
        if getattr(vision, "head", None) is not None:
            vision.head = None
            vision.use_head = False

    def set_trainable(self, trainable: bool) -> None:
        self.trainable = trainable
        self.model.requires_grad_(trainable)

    def patch_grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def encode_group(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) of one shape -> (B, rows, cols, D) patch features (CLS dropped)."""
        rows, cols = self.patch_grid(*pixels.shape[-2:])
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            out = self.model(pixel_values=pixels.to(self.dtype), interpolate_pos_encoding=True,
                             output_hidden_states=True)
        # The last encoder layer kept, before any post-LayerNorm (SigLIP applies one to last_hidden_state).
        hidden = out.hidden_states[-1]
        if self.has_cls:
            hidden = hidden[:, 1:]
        return hidden.reshape(pixels.shape[0], rows, cols, -1)

    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Images (3, H_i, W_i) of any sizes -> features (rows_i, cols_i, D), in input order."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            groups[tuple(image.shape[-2:])].append(index)
        features: list[torch.Tensor | None] = [None] * len(images)
        for indices in groups.values():
            encoded = self.encode_group(torch.stack([images[i] for i in indices]))
            for i, feature in zip(indices, encoded, strict=True):
                features[i] = feature
        return features

    def forward_per_image(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """One ViT call per image: the baseline the batched path is measured against."""
        return [self.encode_group(image.unsqueeze(0))[0] for image in images]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype
