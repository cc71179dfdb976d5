"""Honest throughput accounting for the train loop: tokens/s (visual and text apart), samples/s, achieved TFLOP/s
and MFU from the FLOPs module (components/model/flops.py), and peak memory.

    meter = Throughput(model, device)
    meter.add(batch)          # per micro-batch, before the forward
    meter.snapshot()          # {"tokens_per_s", "visual_tokens_per_s", "text_tokens_per_s", "samples_per_s",
                              #  "tflops_per_s", "mfu" (GPUs with a known peak only), "peak_memory_mib"}
"""

from __future__ import annotations

import resource
import time

import torch

from components.model.flops import peak_tflops, training_step_flops


class Throughput:
    def __init__(self, model, device: torch.device):
        cfg = model.config
        self.image_token_id, self.device = cfg.image_token_id, torch.device(device)
        tower = model.vision_tower
        self.vision_layers = len(getattr(tower.model, "vision_model", tower.model).encoder.layers)
        self.vision_has_cls, self.patch_size = tower.has_cls, tower.patch_size
        self.llm_cfg, self.vision_cfg = cfg.text_config, cfg.vision_config
        self.llm_trainable = any(p.requires_grad for p in model.language_model.parameters())
        self.vision_trainable = any(p.requires_grad for p in tower.parameters())
        on_gpu = self.device.type == "cuda"
        self.peak = peak_tflops(torch.cuda.get_device_name(self.device)) if on_gpu else None
        self.tokens = self.visual = self.samples = self.flops = 0
        self.t0 = time.perf_counter()

    def add(self, batch: dict) -> None:
        mask = batch["attention_mask"]
        self.tokens += int(mask.sum())
        self.visual += int((batch["input_ids"] == self.image_token_id).sum())
        self.samples += int(mask.shape[0])
        patches = [(p.shape[-2] // self.patch_size) * (p.shape[-1] // self.patch_size)
                   for p in batch.get("pixel_values", [])]
        self.flops += training_step_flops(self.llm_cfg, self.vision_cfg, self.vision_layers, self.vision_has_cls,
                                          mask.sum(dim=1).tolist(), patches, self.llm_trainable,
                                          self.vision_trainable)

    def peak_memory_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; the process's peak RSS

    def snapshot(self) -> dict:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        out = {"tokens_per_s": self.tokens / elapsed, "visual_tokens_per_s": self.visual / elapsed,
               "text_tokens_per_s": (self.tokens - self.visual) / elapsed, "samples_per_s": self.samples / elapsed,
               "tflops_per_s": self.flops / elapsed / 1e12, "peak_memory_mib": self.peak_memory_mib()}
        if self.peak:
            out["mfu"] = out["tflops_per_s"] / self.peak
        return out
