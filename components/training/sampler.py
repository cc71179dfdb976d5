"""LLaVA's `group_by_modality_length` as a resumable batch sampler whose optimizer steps do not depend on how the
global batch is split.

Per epoch, with a generator seeded by `seed + epoch` (so every rank and every resumed run draws the same
order): image samples (length > 0) and text-only samples (length < 0, LLaVA's sign convention) are shuffled
separately, cut into megabatches of `mega_batches` global batches, each megabatch is sorted by length
(longest first) and cut into global batches; the modalities never mix except in one final batch made of both
leftovers (as in LLaVA); then the order of the global batches is shuffled.

A global batch is one optimizer step: `batch_size * num_replicas * accumulation` samples (LLaVA's
`_get_train_sampler` passes `world_size * gradient_accumulation_steps` for the same reason). It is cut into
micro-batches of `batch_size` in order, and micro-batch j is accumulation step j // num_replicas of rank
j % num_replicas: 1 worker x micro 2 x accumulation 2 and 2 workers x micro 2 train the same micro-batches in
the same optimizer step. One drop rule
for every split: a global batch short of full (the epoch's remainder, fewer than a global batch of samples) is
not trained, so no step is short and none straddles two epochs; `dropped(epoch)` counts those samples.

`state_dict()` holds the epoch and the position (this rank's micro-batches already consumed in that epoch);
`load_state_dict` makes the next `__iter__` yield exactly the remaining micro-batches. A DataLoader with workers
prefetches, so the sampler's own count runs ahead of what the loop consumed: the loop passes its count,
`state_dict(consumed=n)`.
"""

from __future__ import annotations

import torch


class LengthGroupedBatchSampler:
    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 mega_batches: int = 50, accumulation: int = 1):
        if batch_size < 1 or num_replicas < 1 or accumulation < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"bad batch_size {batch_size} / num_replicas {num_replicas} / rank {rank} / "
                             f"accumulation {accumulation}")
        if any(n == 0 for n in lengths):
            raise ValueError("a sample of length 0 has no modality sign")
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.num_replicas, self.rank, self.mega_batches = num_replicas, rank, mega_batches
        self.accumulation = accumulation
        self.epoch, self.position = 0, 0

    @property
    def global_size(self) -> int:
        """Samples per optimizer step."""
        return self.batch_size * self.num_replicas * self.accumulation

    # -- the order -----------------------------------------------------------------------------------
    def _all_batches(self, epoch: int) -> list[list[int]]:
        """Every global batch of `epoch` in order, the short remainder (if any) last."""
        g = torch.Generator().manual_seed(self.seed + epoch)
        size = self.global_size
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
        return [full[j] for j in order]

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The optimizer steps of `epoch`: every full global batch, in order."""
        return [b for b in self._all_batches(epoch) if len(b) == self.global_size]

    def dropped(self, epoch: int) -> int:
        """Samples of `epoch` in no full global batch (fewer than one global batch): not trained that epoch."""
        return len(self.lengths) - self.global_size * len(self.global_batches(epoch))

    def _micro_batches(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches of `epoch`, `accumulation` per optimizer step."""
        micro, mine = self.batch_size, []
        for batch in self.global_batches(epoch):
            pieces = [batch[k:k + micro] for k in range(0, len(batch), micro)]
            mine += pieces[self.rank::self.num_replicas]
        return mine

    def __len__(self) -> int:
        return len(self._micro_batches(self.epoch)) - self.position

    def __iter__(self):
        for batch in self._micro_batches(self.epoch)[self.position:]:
            self.position += 1
            yield batch

    # -- resumption ----------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def state_dict(self, consumed: int | None = None) -> dict:
        position = self.position if consumed is None else consumed
        return {"seed": self.seed, "epoch": self.epoch, "position": position, "num_samples": len(self.lengths),
                "batch_size": self.batch_size, "num_replicas": self.num_replicas, "accumulation": self.accumulation}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "num_samples", "batch_size", "num_replicas", "accumulation"):
            mine = len(self.lengths) if key == "num_samples" else getattr(self, key)
            if state.get(key, 1 if key == "accumulation" else None) != mine:
                raise ValueError(f"sampler state has {key}={state.get(key)}, this sampler {mine}: not the same "
                                 "data order")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
