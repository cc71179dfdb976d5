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
    assert sorted(flat) == list(range(len(ls)))
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


@pytest.mark.parametrize("stop", [0, 1, 17, 51])
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
