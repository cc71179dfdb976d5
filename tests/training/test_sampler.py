"""GlobalBatchSampler: LLaVA's orders (random pretraining, modality-grouped fine-tuning, against a literal port of
llava_trainer.py), the length-grouped option, determinism, exact resumption, ranks and the split of a global batch."""

import random

import pytest
import torch

from components.training.sampler import ORDERS, GlobalBatchSampler


def lengths(n=203, seed=1):
    rng = random.Random(seed)
    return [rng.randint(5, 500) * (1 if rng.random() < 0.7 else -1) for _ in range(n)]


# -- a literal port of LLaVA's llava/train/llava_trainer.py (haotian-liu/LLaVA), every draw from `generator` --------
def ref_split_to_even_chunks(indices, lengths, num_chunks):
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    num_indices_per_chunk = len(indices) // num_chunks
    chunks = [[] for _ in range(num_chunks)]
    chunks_lengths = [0 for _ in range(num_chunks)]
    for index in indices:
        shortest_chunk = chunks_lengths.index(min(chunks_lengths))
        chunks[shortest_chunk].append(index)
        chunks_lengths[shortest_chunk] += lengths[index]
        if len(chunks[shortest_chunk]) == num_indices_per_chunk:
            chunks_lengths[shortest_chunk] = float("inf")
    return chunks


def ref_get_length_grouped_indices(lengths, batch_size, world_size, generator=None):
    indices = torch.randperm(len(lengths), generator=generator)
    megabatch_size = world_size * batch_size
    megabatches = [indices[i: i + megabatch_size].tolist() for i in range(0, len(lengths), megabatch_size)]
    megabatches = [sorted(megabatch, key=lambda i: lengths[i], reverse=True) for megabatch in megabatches]
    megabatches = [ref_split_to_even_chunks(megabatch, lengths, world_size) for megabatch in megabatches]
    return [i for megabatch in megabatches for batch in megabatch for i in batch]


def ref_get_modality_length_grouped_indices(lengths, batch_size, world_size, generator=None):
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return ref_get_length_grouped_indices(lengths, batch_size, world_size, generator=generator)
    mm_indices, mm_lengths = zip(*[(i, n) for i, n in enumerate(lengths) if n > 0], strict=True)
    lang_indices, lang_lengths = zip(*[(i, -n) for i, n in enumerate(lengths) if n < 0], strict=True)
    # the reference passes generator=None here (torch's global RNG); the port draws from the same generator
    mm_shuffle = [mm_indices[i] for i in ref_get_length_grouped_indices(mm_lengths, batch_size, world_size, generator)]
    lang_shuffle = [lang_indices[i]
                    for i in ref_get_length_grouped_indices(lang_lengths, batch_size, world_size, generator)]
    megabatch_size = world_size * batch_size
    mm_megabatches = [mm_shuffle[i: i + megabatch_size] for i in range(0, len(mm_shuffle), megabatch_size)]
    lang_megabatches = [lang_shuffle[i: i + megabatch_size] for i in range(0, len(lang_shuffle), megabatch_size)]
    additional_batch = mm_megabatches[-1] + lang_megabatches[-1]
    megabatches = mm_megabatches[:-1] + lang_megabatches[:-1]
    megabatch_indices = torch.randperm(len(megabatches), generator=generator)
    megabatches = [megabatches[i] for i in megabatch_indices]
    if len(additional_batch) > 0:
        megabatches.append(sorted(additional_batch))
    return [i for megabatch in megabatches for i in megabatch]


def reference_micro_batches(flat, micro, workers, rank):
    """HF Trainer + accelerate: the flat list cut into micro-batches, micro-batch k to rank k % workers (the
    `BatchSamplerShard` of the prepared DataLoader); the reference then trains a short tail, this project drops it."""
    pieces = [flat[k:k + micro] for k in range(0, len(flat), micro)]
    return pieces[rank::workers]


@pytest.mark.parametrize(("workers", "micro", "accumulation", "text_share"),
                         [(1, 4, 1, 0.3), (2, 2, 2, 0.3), (4, 2, 4, 0.1), (2, 4, 1, 0.0), (8, 1, 2, 0.5)])
def test_modality_grouped_is_llavas_order(workers, micro, accumulation, text_share):
    """#15 item 1: for a known seed and modality mix, every rank's micro-batches are the reference's (LLaVA's
    `LengthGroupedSampler(group_by_modality=True)` with world x grad-accum) up to the dropped short tail."""
    rng = random.Random(4)
    ls = [rng.randint(3, 400) * (-1 if rng.random() < text_share else 1) for _ in range(301)]
    flat = ref_get_modality_length_grouped_indices(ls, micro, workers * accumulation, torch.Generator().manual_seed(9))
    for rank in range(workers):
        ours = list(GlobalBatchSampler(ls, micro, order="modality_grouped", seed=9, num_replicas=workers, rank=rank,
                                       accumulation=accumulation))
        theirs = reference_micro_batches(flat, micro, workers, rank)
        assert ours == theirs[:len(ours)] and len(theirs) - len(ours) <= accumulation  # the short tail


def test_modality_grouped_steps_hold_one_modality_and_balance_lengths_across_ranks():
    ls = lengths(n=400)
    s = GlobalBatchSampler(ls, 4, order="modality_grouped", seed=2, num_replicas=4)
    batches = s.global_batches(0)
    mixed = [b for b in batches if len({ls[i] > 0 for i in b}) > 1]
    assert len(mixed) <= 1 and (not mixed or mixed[0] == batches[-1])  # LLaVA's additional batch, last
    for b in batches[:-1]:
        totals = [sum(abs(ls[i]) for i in b[k:k + 4]) for k in range(0, 16, 4)]
        assert max(totals) - min(totals) <= max(abs(ls[i]) for i in b)  # dealt to the least-loaded rank
        # not sorted into one length per step: a global batch spans the set's spread (unlike length_grouped)
    spread = sum(max(abs(ls[i]) for i in b) - min(abs(ls[i]) for i in b) for b in batches) / len(batches)
    grouped = GlobalBatchSampler(ls, 4, order="length_grouped", seed=2, num_replicas=4).global_batches(0)
    assert spread > 5 * sum(max(abs(ls[i]) for i in b) - min(abs(ls[i]) for i in b) for b in grouped) / len(grouped)


def test_random_is_a_seeded_permutation_cut_into_global_batches():
    """LLaVA's pretraining: HF's RandomSampler, no grouping."""
    ls = lengths(n=30)
    s = GlobalBatchSampler(ls, 2, order="random", seed=5, accumulation=2)
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(5)).tolist()
    assert s.global_batches(0) == [perm[k:k + 4] for k in range(0, 28, 4)] and s.dropped(0) == 2


def test_length_grouped_keeps_steps_homogeneous():
    ls = lengths()
    s = GlobalBatchSampler(ls, batch_size=4, order="length_grouped", seed=3, mega_batches=5)
    batches = list(s)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat) == len(ls) - s.dropped(0) and 0 <= s.dropped(0) < 4  # 203 = 50 x 4 + 3
    mixed = [b for b in batches if len({ls[i] > 0 for i in b}) > 1]
    assert len(mixed) <= 1  # only the leftover batch may mix modalities
    for b in batches:
        if b not in mixed:
            assert [abs(ls[i]) for i in b] == sorted((abs(ls[i]) for i in b), reverse=True)
    spread = sum(max(abs(ls[i]) for i in b) - min(abs(ls[i]) for i in b) for b in batches) / len(batches)
    shuffled = [list(range(len(ls)))[k:k + 4] for k in range(0, len(ls), 4)]
    naive = sum(max(abs(ls[i]) for i in b) - min(abs(ls[i]) for i in b) for b in shuffled) / len(shuffled)
    assert spread < naive / 2  # batches are length-homogeneous


@pytest.mark.parametrize("order", ORDERS)
def test_each_sample_at_most_once_and_the_count_reconciles(order):
    ls = lengths()
    s = GlobalBatchSampler(ls, 2, order=order, seed=1, accumulation=3)
    flat = [i for b in s.global_batches(0) for i in b]
    assert len(set(flat)) == len(flat) == len(ls) - s.dropped(0)
    assert s.steps_per_epoch() == len(s.global_batches(0)) == len(s.global_batches(1)) and len(s) == len(flat) // 2


@pytest.mark.parametrize("order", ORDERS)
def test_deterministic_by_seed_and_epoch(order):
    ls = lengths()
    a, b = GlobalBatchSampler(ls, 4, order=order, seed=7), GlobalBatchSampler(ls, 4, order=order, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != b.global_batches(0)
    assert epoch1 == GlobalBatchSampler(ls, 4, order=order, seed=7).global_batches(1)


@pytest.mark.parametrize("stop", [0, 1, 17, 50])
def test_resume_yields_exactly_the_remaining_batches(stop):
    ls = lengths()
    full = GlobalBatchSampler(ls, 4, seed=5)
    full.set_epoch(2)
    expected = list(full)
    first = GlobalBatchSampler(ls, 4, seed=5)
    first.set_epoch(2)
    it = iter(first)
    head = [next(it) for _ in range(stop)]
    state = first.state_dict()
    assert state["epoch"] == 2 and state["position"] == stop
    resumed = GlobalBatchSampler(ls, 4, seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) == len(expected) - stop
    assert head + list(resumed) == expected


def test_consumed_overrides_prefetched_position_and_mismatch_raises():
    s = GlobalBatchSampler(lengths(), 4)
    it = iter(s)
    for _ in range(5):
        next(it)
    assert s.state_dict(consumed=3)["position"] == 3
    with pytest.raises(ValueError, match="batch_size"):
        GlobalBatchSampler(lengths(), 8).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="order"):
        GlobalBatchSampler(lengths(), 4, order="random").load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="unknown batch order"):
        GlobalBatchSampler(lengths(), 4, order="sorted")


def test_ranks_split_each_global_batch():
    ls = lengths()
    ranks = [GlobalBatchSampler(ls, 3, seed=2, num_replicas=2, rank=r) for r in (0, 1)]
    per_rank = [list(r) for r in ranks]
    assert len(per_rank[0]) == len(per_rank[1])
    for b0, b1, g in zip(*per_rank, ranks[0].global_batches(0), strict=True):
        assert len(b0) == len(b1) == 3 and b0 + b1 == g


@pytest.mark.parametrize("order", ["random", "length_grouped"])
@pytest.mark.parametrize(("workers", "micro", "accumulation"), [(1, 2, 2), (2, 2, 1), (1, 4, 1), (2, 1, 2)])
def test_an_optimizer_step_holds_the_same_samples_however_the_global_batch_is_split(order, workers, micro,
                                                                                    accumulation):
    """#15: the sampler's global batch is micro x workers x accumulation, so every split of a global batch of 4
    trains the same samples in each optimizer step, in the same micro-batches wherever micro is the same, and a
    short remainder is dropped under every split (it made a short step with one worker, and was dropped with two).
    (modality_grouped deals a global batch into workers x accumulation balanced micro-batches: the same samples
    per step for every split, as asserted here for the orders that do not depend on the split at all.)"""
    ls = lengths(n=30)
    reference = GlobalBatchSampler(ls, 4, order=order, seed=3).global_batches(0)
    ranks = [list(GlobalBatchSampler(ls, micro, order=order, seed=3, num_replicas=workers, rank=r,
                                     accumulation=accumulation)) for r in range(workers)]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == len(reference) * accumulation
    for step, batch in enumerate(reference):
        micro_batches = [ranks[r][step * accumulation + a] for a in range(accumulation) for r in range(workers)]
        assert sorted(i for m in micro_batches for i in m) == sorted(batch)
        if micro == 2:  # 1x2x2 and 2x2x1: the same two micro-batches
            assert sorted(map(tuple, micro_batches)) == sorted([tuple(batch[:2]), tuple(batch[2:])])
    assert GlobalBatchSampler(ls, micro, order=order, num_replicas=workers, accumulation=accumulation).dropped(0) == 2


@pytest.mark.parametrize(("workers", "micro", "accumulation"), [(1, 2, 2), (2, 2, 1), (1, 4, 1), (4, 1, 1)])
def test_modality_grouped_steps_hold_the_same_samples_however_split(workers, micro, accumulation):
    ls = lengths(n=41)
    reference = GlobalBatchSampler(ls, 4, order="modality_grouped", seed=3).global_batches(0)
    split = GlobalBatchSampler(ls, micro, order="modality_grouped", seed=3, num_replicas=workers,
                               accumulation=accumulation).global_batches(0)
    assert [sorted(b) for b in split] == [sorted(b) for b in reference]


def test_accumulation_is_part_of_the_resumable_state():
    s = GlobalBatchSampler(lengths(), 2, accumulation=2)
    with pytest.raises(ValueError, match="accumulation"):
        GlobalBatchSampler(lengths(), 2, accumulation=1).load_state_dict(s.state_dict())
