"""LLaVA's `group_by_modality_length` as a resumable batch sampler.

Per epoch, with a generator seeded by `seed + epoch` (so every rank and every resumed run draws the same
order): image samples (length > 0) and text-only samples (length < 0, LLaVA's sign convention) are shuffled
separately, cut into megabatches of `mega_batches` global batches, each megabatch is sorted by length
(longest first) and cut into global batches of `batch_size * num_replicas`; the modalities never mix except
in one final batch made of both leftovers (as in LLaVA); then the order of the global batches is shuffled.
Each rank takes its contiguous share of every global batch.

`state_dict()` holds the epoch and the position (global batches already consumed in that epoch);
`load_state_dict` makes the next `__iter__` yield exactly the remaining batches. A DataLoader with workers
prefetches, so the sampler's own count runs ahead of what the loop consumed: the loop passes its count,
`state_dict(consumed=n)`.
"""

from __future__ import annotations

import torch


class LengthGroupedBatchSampler:
    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 mega_batches: int = 50, drop_last: bool = False):
        if batch_size < 1 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"bad batch_size {batch_size} / num_replicas {num_replicas} / rank {rank}")
        if any(n == 0 for n in lengths):
            raise ValueError("a sample of length 0 has no modality sign")
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.num_replicas, self.rank, self.mega_batches, self.drop_last = num_replicas, rank, mega_batches, drop_last
        self.epoch, self.position = 0, 0

    # -- the order -----------------------------------------------------------------------------------
    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every global batch (batch_size * num_replicas indices) of `epoch`, in order."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        size = self.batch_size * self.num_replicas
        full, leftovers = [], []
        for sign in (1, -1):
            idx = [i for i, n in enumerate(self.lengths) if (n > 0) == (sign > 0)]
            perm = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            mega = size * self.mega_batches
            for m in range(0, len(perm), mega):
                chunk = sorted(perm[m:m + mega], key=lambda i: -abs(self.lengths[i]))
                batches = [chunk[k:k + size] for k in range(0, len(chunk), size)]
                if len(batches[-1]) < size:
                    leftovers += batches.pop()
                full += batches
        if leftovers:  # LLaVA's "additional batch": both modalities' remainders together
            full += [leftovers[k:k + size] for k in range(0, len(leftovers), size)]
        order = torch.randperm(len(full), generator=g).tolist()
        batches = [full[j] for j in order]
        if self.drop_last or self.num_replicas > 1:  # ranks must agree on the number of steps
            batches = [b for b in batches if len(b) == size]
        return batches

    def _share(self, batch: list[int]) -> list[int]:
        per = len(batch) // self.num_replicas
        return batch[self.rank * per:(self.rank + 1) * per]

    def __len__(self) -> int:
        return len(self.global_batches(self.epoch)) - self.position

    def __iter__(self):
        batches = self.global_batches(self.epoch)
        for batch in batches[self.position:]:
            self.position += 1
            yield self._share(batch)

    # -- resumption ----------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def state_dict(self, consumed: int | None = None) -> dict:
        position = self.position if consumed is None else consumed
        return {"seed": self.seed, "epoch": self.epoch, "position": position, "num_samples": len(self.lengths),
                "batch_size": self.batch_size, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "num_samples", "batch_size", "num_replicas"):
            mine = len(self.lengths) if key == "num_samples" else getattr(self, key)
            if state[key] != mine:
                raise ValueError(f"sampler state has {key}={state[key]}, this sampler {mine}: not the same data order")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
