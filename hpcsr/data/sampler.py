"""A data-parallel batch sampler whose position is the number of samples seen.

Training consumes one endless stream of global sample numbers 0, 1, 2, ... (the patch dataset
turns a number into a patch, deterministically). Each micro-batch step takes the next
`batch_size * world_size` numbers; rank r gets the r-th slice of `batch_size` of them. The stream
therefore depends only on where it starts, so a run resumed from `samples_seen` continues with
exactly the samples an uninterrupted run would have drawn, on the same or on another world size.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class SamplesSeenSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches (lists of global sample numbers) from `samples_seen` on.

    Give it to a DataLoader as `batch_sampler`. `micro_batches` limits the number of micro-batches
    yielded (None: endless).
    """

    def __init__(
        self,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        samples_seen: int = 0,
        micro_batches: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in 0..world_size-1 (world_size={world_size})")
        if samples_seen < 0:
            raise ValueError(f"samples_seen={samples_seen} must be >= 0")
        if micro_batches is not None and micro_batches < 0:
            raise ValueError(f"micro_batches={micro_batches} must be >= 0 or None")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.samples_seen, self.micro_batches = samples_seen, micro_batches

    @property
    def global_batch(self) -> int:
        """Samples consumed by all ranks together in one micro-batch step."""
        return self.batch_size * self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        start, done = self.samples_seen + self.rank * self.batch_size, 0
        while self.micro_batches is None or done < self.micro_batches:
            yield list(range(start, start + self.batch_size))
            start += self.global_batch
            done += 1

    def __len__(self) -> int:
        if self.micro_batches is None:
            raise TypeError("an endless SamplesSeenSampler has no length: pass micro_batches to bound it")
        return self.micro_batches
