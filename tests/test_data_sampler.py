"""The samples-seen sampler: one global stream, whatever the world size, resumable at any count."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from hpcsr.data.sampler import SamplesSeenSampler


def global_stream(batch: int, world: int, start: int, steps: int) -> list[int]:
    """The numbers all ranks consume, micro-batch step by step, rank order within a step."""
    iters = [iter(SamplesSeenSampler(batch, r, world, start)) for r in range(world)]
    return [i for _ in range(steps) for it in iters for i in next(it)]


@given(batch=st.integers(1, 5), world=st.integers(1, 4), start=st.integers(0, 50), steps=st.integers(1, 6))
def test_stream_is_consecutive_for_any_world_size(batch, world, start, steps):
    assert global_stream(batch, world, start, steps) == list(range(start, start + batch * world * steps))


def test_resume_on_other_world_size_continues_the_stream():
    # 3 steps on 2 ranks (batch 2), then resume on 1 rank and on 4 ranks from 12 samples seen
    first = global_stream(2, 2, 0, 3)
    assert first == list(range(12))
    assert global_stream(2, 1, len(first), 2) == list(range(12, 16))
    assert global_stream(2, 4, len(first), 1) == list(range(12, 20))


def test_ranks_are_disjoint_and_bounded():
    a = list(SamplesSeenSampler(3, 0, 2, 6, micro_batches=2))
    b = list(SamplesSeenSampler(3, 1, 2, 6, micro_batches=2))
    assert a == [[6, 7, 8], [12, 13, 14]] and b == [[9, 10, 11], [15, 16, 17]]
    assert len(SamplesSeenSampler(3, 0, 2, micro_batches=2)) == 2
    with pytest.raises(TypeError, match="micro_batches"):
        len(SamplesSeenSampler(3))


def test_as_dataloader_batch_sampler():
    loader = DataLoader(list(range(100)), batch_sampler=SamplesSeenSampler(4, 1, 2, 8, micro_batches=2))
    assert [b.tolist() for b in loader] == [[12, 13, 14, 15], [20, 21, 22, 23]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=0), "batch_size=0"),
        (dict(batch_size=2, rank=2, world_size=2), "rank=2"),
        (dict(batch_size=2, samples_seen=-1), "samples_seen=-1"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplesSeenSampler(**kwargs)
