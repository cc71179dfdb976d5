"""LengthGroupedBatchSampler: LLaVA's modality/length grouping, determinism, exact resumption, ranks."""

import random

import pytest

from components.training.sampler import LengthGroupedBatchSampler


def lengths(n=203, seed=1):
    rng = random.Random(seed)
    return [rng.randint(5, 500) * (1 if rng.random() < 0.7 else -1) for _ in range(n)]


def test_each_sample_once_grouped_by_modality_and_length():
    ls = lengths()
    s = LengthGroupedBatchSampler(ls, batch_size=4, seed=3, mega_batches=5)
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


def test_deterministic_by_seed_and_epoch():
    ls = lengths()
    a, b = LengthGroupedBatchSampler(ls, 4, seed=7), LengthGroupedBatchSampler(ls, 4, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != b.global_batches(0)
    assert epoch1 == LengthGroupedBatchSampler(ls, 4, seed=7).global_batches(1)


@pytest.mark.parametrize("stop", [0, 1, 17, 50])
def test_resume_yields_exactly_the_remaining_batches(stop):
    ls = lengths()
    full = LengthGroupedBatchSampler(ls, 4, seed=5)
    full.set_epoch(2)
    expected = list(full)
    first = LengthGroupedBatchSampler(ls, 4, seed=5)
    first.set_epoch(2)
    it = iter(first)
    head = [next(it) for _ in range(stop)]
    state = first.state_dict()
    assert state["epoch"] == 2 and state["position"] == stop
    resumed = LengthGroupedBatchSampler(ls, 4, seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) == len(expected) - stop
    assert head + list(resumed) == expected


def test_consumed_overrides_prefetched_position_and_mismatch_raises():
    s = LengthGroupedBatchSampler(lengths(), 4)
    it = iter(s)
    for _ in range(5):
        next(it)
    assert s.state_dict(consumed=3)["position"] == 3
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedBatchSampler(lengths(), 8).load_state_dict(s.state_dict())


def test_ranks_split_each_global_batch():
    ls = lengths()
    ranks = [LengthGroupedBatchSampler(ls, 3, seed=2, num_replicas=2, rank=r) for r in (0, 1)]
    per_rank = [list(r) for r in ranks]
    assert len(per_rank[0]) == len(per_rank[1])
    for b0, b1, g in zip(*per_rank, ranks[0].global_batches(0), strict=True):
        assert len(b0) == len(b1) == 3 and b0 + b1 == g


@pytest.mark.parametrize(("workers", "micro", "accumulation"), [(1, 2, 2), (2, 2, 1), (1, 4, 1), (2, 1, 2)])
def test_an_optimizer_step_holds_the_same_samples_however_the_global_batch_is_split(workers, micro, accumulation):
    """#15: the sampler's global batch is micro x workers x accumulation, so every split of a global batch of 4
    trains the same samples in each optimizer step, in the same micro-batches wherever micro is the same, and a
    short remainder is dropped under every split (it made a short step with one worker, and was dropped with two)."""
    ls = lengths(n=30)
    reference = LengthGroupedBatchSampler(ls, 4, seed=3).global_batches(0)
    ranks = [list(LengthGroupedBatchSampler(ls, micro, seed=3, num_replicas=workers, rank=r,
                                            accumulation=accumulation)) for r in range(workers)]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == len(reference) * accumulation
    for step, batch in enumerate(reference):
        micro_batches = [ranks[r][step * accumulation + a] for a in range(accumulation) for r in range(workers)]
        assert sorted(i for m in micro_batches for i in m) == sorted(batch)
        if micro == 2:  # 1x2x2 and 2x2x1: the same two micro-batches
            assert sorted(map(tuple, micro_batches)) == sorted([tuple(batch[:2]), tuple(batch[2:])])
    assert LengthGroupedBatchSampler(ls, micro, num_replicas=workers, accumulation=accumulation).dropped(0) == 2


def test_accumulation_is_part_of_the_resumable_state():
    s = LengthGroupedBatchSampler(lengths(), 2, accumulation=2)
    with pytest.raises(ValueError, match="accumulation"):
        LengthGroupedBatchSampler(lengths(), 2, accumulation=1).load_state_dict(s.state_dict())
