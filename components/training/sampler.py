"""The order of the training samples as a resumable batch sampler whose optimizer steps do not depend on how the
global batch is split.

A global batch is one optimizer step: `batch_size * num_replicas * accumulation` samples (LLaVA's
`_get_train_sampler` passes `world_size * gradient_accumulation_steps` for the same reason). It is cut into
micro-batches of `batch_size` in order, and micro-batch j is accumulation step j // num_replicas of rank
j % num_replicas (what accelerate's `BatchSamplerShard` does with HF Trainer's flat index list): 1 worker x micro 2
x accumulation 2 and 2 workers x micro 2 train the same micro-batches in the same optimizer step. One drop rule
for every order and split: a global batch short of full is not trained, so no step is short and none straddles
two epochs; `dropped(epoch)` counts those samples (HF's Trainer trains a short last step instead).

Orders (`order`), each drawn per epoch from a generator seeded by `seed + epoch`, so every rank and every resumed
run draws the same one:

- `random`: a random permutation cut into global batches. LLaVA's pretraining (no `group_by_modality_length`:
  HF's RandomSampler).
- `modality_grouped`: LLaVA's `get_modality_length_grouped_indices` (llava/train/llava_trainer.py), its
  fine-tuning order. Image samples (length > 0) and text-only samples (length < 0) are each shuffled and cut into
  megabatches of ONE global batch; each megabatch is sorted by length (longest first) only to deal its samples
  into micro-batches of balanced total length (`split_to_even_chunks`); the megabatches of both modalities are
  shuffled together, except the last one of each modality, which are joined into one batch sorted by index and
  put at the end. With a single modality: just the balanced megabatches, in their drawn order. The reference
  draws the per-modality permutations from torch's global RNG; here every draw comes from the seeded generator
  (tests/training/test_sampler.py checks every rank's micro-batches against a port of the reference). One
  difference: a set of text-only samples alone is sorted longest first here; the reference sorts its raw negative
  lengths, shortest first.
  Its lengths are LLaVA's `modality_lengths`: words of the conversation, image tokens not counted.
- `length_grouped`: an earlier order of this project, kept as an option because it pads least: megabatches of
  `mega_batches` global batches are sorted by length and cut, so each optimizer step holds samples of one
  length (and one slice count, when the lengths count visual tokens); the global batches are then shuffled.

`state_dict()` holds the epoch and the position (this rank's micro-batches already consumed in that epoch);
`load_state_dict` makes the next `__iter__` yield exactly the remaining micro-batches. A DataLoader with workers
prefetches, so the sampler's own count runs ahead of what the loop consumed: the loop passes its count,
`state_dict(consumed=n)`.
"""

from __future__ import annotations

import torch

ORDERS = ("random", "modality_grouped", "length_grouped")


def split_to_even_chunks(indices: list[int], lengths: list[int], num_chunks: int) -> list[list[int]]:
    """LLaVA's `split_to_even_chunks`: deal `indices` (sorted longest first) into `num_chunks` chunks of equal
    size, each next index to the chunk of least total length so far (a full chunk takes no more); when the
    count does not divide, every num_chunks-th index instead."""
    if len(indices) % num_chunks:
        return [indices[k::num_chunks] for k in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


class GlobalBatchSampler:
    def __init__(self, lengths: list[int], batch_size: int, order: str = "modality_grouped", seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, accumulation: int = 1, mega_batches: int = 50):
        if batch_size < 1 or num_replicas < 1 or accumulation < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"bad batch_size {batch_size} / num_replicas {num_replicas} / rank {rank} / "
                             f"accumulation {accumulation}")
        if order not in ORDERS:
            raise ValueError(f"unknown batch order {order!r}; choose one of {list(ORDERS)}")
        if any(n == 0 for n in lengths):
            raise ValueError("a sample of length 0 has no modality sign")
        self.lengths, self.batch_size, self.order, self.seed = list(lengths), batch_size, order, seed
        self.abs_lengths = [abs(n) for n in self.lengths]
        self.num_replicas, self.rank, self.mega_batches = num_replicas, rank, mega_batches
        self.accumulation = accumulation
        self.epoch, self.position = 0, 0

    @property
    def global_size(self) -> int:
        """Samples per optimizer step."""
        return self.batch_size * self.num_replicas * self.accumulation

    # -- the orders: every global batch of an epoch, micro-batches in order, short ones included ---------------
    def _cut(self, flat: list[int]) -> list[list[int]]:
        size = self.global_size
        return [flat[k:k + size] for k in range(0, len(flat), size)]

    def _shuffled(self, indices: list[int], g: torch.Generator) -> list[int]:
        return [indices[j] for j in torch.randperm(len(indices), generator=g).tolist()]

    def _random(self, g: torch.Generator) -> list[list[int]]:
        return self._cut(self._shuffled(list(range(len(self.lengths))), g))

    def _balanced_megabatches(self, indices: list[int], g: torch.Generator) -> list[list[int]]:
        """LLaVA's `get_length_grouped_indices` with megabatch = one global batch: shuffled, then each global batch
        sorted longest first and dealt into length-balanced micro-batches (concatenated in micro-batch order)."""
        chunks = self.num_replicas * self.accumulation
        batches = []
        for mega in self._cut(self._shuffled(indices, g)):
            mega = sorted(mega, key=lambda i: self.abs_lengths[i], reverse=True)
            batches.append([i for chunk in split_to_even_chunks(mega, self.abs_lengths, chunks) for i in chunk])
        return batches

    def _modality_grouped(self, g: torch.Generator) -> list[list[int]]:
        image = [i for i, n in enumerate(self.lengths) if n > 0]
        text = [i for i, n in enumerate(self.lengths) if n < 0]
        if not image or not text:
            return self._balanced_megabatches(image or text, g)
        image_batches, text_batches = self._balanced_megabatches(image, g), self._balanced_megabatches(text, g)
        last = sorted(image_batches.pop() + text_batches.pop())  # LLaVA's "additional batch", at the end
        rest = image_batches + text_batches
        return [rest[j] for j in torch.randperm(len(rest), generator=g).tolist()] + self._cut(last)

    def _length_grouped(self, g: torch.Generator) -> list[list[int]]:
        size = self.global_size
        full, leftovers = [], []
        for sign in (1, -1):
            perm = self._shuffled([i for i, n in enumerate(self.lengths) if (n > 0) == (sign > 0)], g)
            mega = size * self.mega_batches
            for m in range(0, len(perm), mega):
                batches = self._cut(sorted(perm[m:m + mega], key=lambda i: -abs(self.lengths[i])))
                if len(batches[-1]) < size:
                    leftovers += batches.pop()
                full += batches
        full += self._cut(leftovers)  # both modalities' remainders together
        return [full[j] for j in torch.randperm(len(full), generator=g).tolist()]

    def _all_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        return {"random": self._random, "modality_grouped": self._modality_grouped,
                "length_grouped": self._length_grouped}[self.order](g)

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The optimizer steps of `epoch`: every full global batch, in order."""
        return [b for b in self._all_batches(epoch) if len(b) == self.global_size]

    def steps_per_epoch(self) -> int:
        """Optimizer steps an epoch: the same every epoch (each order's count depends only on the modality counts)."""
        return len(self.global_batches(0))

    def dropped(self, epoch: int) -> int:
        """Samples of `epoch` in no full global batch: not trained that epoch."""
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
                "batch_size": self.batch_size, "num_replicas": self.num_replicas, "accumulation": self.accumulation,
                "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        # states written before a key existed hold that key's only value then
        before = {"accumulation": 1, "order": "length_grouped"}
        for key in ("seed", "num_samples", "batch_size", "num_replicas", "accumulation", "order"):
            mine = len(self.lengths) if key == "num_samples" else getattr(self, key)
            if state.get(key, before.get(key)) != mine:
                raise ValueError(f"sampler state has {key}={state.get(key)}, this sampler {mine}: not the same "
                                 "data order")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
