"""Training patches drawn from several shards of one factor pair (other radars, other periods).

One day of one radar teaches one climate and one product's texture; a network trained on it alone
learns the training radar better with every step and transfers worse to another (issue 13, s26:
four times the mean stage's steps on BoM lowered its own validation RMSE and raised the held-out
KNMI one). `MixedPatches` draws each item from one of several `PatchDataset`s, chosen at random
with probabilities proportional to their numbers of distinct patches (windows x corners of the
split; mix 'patches'), so a larger or longer store weighs more and every distinct patch is about
equally likely, or with equal probabilities (mix 'shards': each shard a task of its own, such as one
radar at two pixel sizes told to the networks, model.pixel_input).
The choice is fixed by seed, stream and item number, so the stream stays deterministic and a
resumed run continues with the samples an uninterrupted run would have drawn (hpcsr.data.sampler).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from hpcsr.data.config import MIXES
from hpcsr.data.patches import PatchDataset


class MixedPatches(Dataset):
    """Items of several PatchDatasets of one factor pair and one patch geometry, each item from one of
    them (`source`); the item number is passed on unchanged, so each part keeps its own epochs."""

    def __init__(self, parts: list[PatchDataset], seed: int, stream: int, mix: str = "patches"):
        if not parts:
            raise ValueError("MixedPatches needs at least one patch dataset")
        pairs = {p.pair for p in parts}
        if len(pairs) > 1:
            named = ", ".join(f"{p.shard_path} ({p.pair.name})" for p in parts)
            raise ValueError(f"shards of different factor pairs cannot be mixed: {named}")
        self.parts, self.seed, self.stream = parts, int(seed), int(stream)
        self.pair = parts[0].pair
        if mix not in MIXES:
            raise ValueError(f"mix {mix!r} must be one of {', '.join(MIXES)}")
        sizes = np.array([len(p.windows) * len(p.corners) for p in parts], np.float64)
        if mix == "shards":
            sizes = np.ones(len(parts))
        self.weights = sizes / sizes.sum()
        self._edges = np.cumsum(self.weights)

    def __len__(self) -> int:
        """Items in one epoch of every part together."""
        return sum(len(p) for p in self.parts)

    def source(self, item: int) -> int:
        """Index of the part item `item` comes from, fixed by seed, stream and item."""
        u = np.random.default_rng([self.seed, self.stream, 4, int(item)]).random()
        return min(int(np.searchsorted(self._edges, u, side="right")), len(self.parts) - 1)

    def __getitem__(self, item: int) -> dict:
        """The part's item `item`, with 'source': the part's index (a 0-d int64 tensor)."""
        k = self.source(item)
        return {**self.parts[k][item], "source": torch.tensor(k)}

    def close(self) -> None:
        for p in self.parts:
            p.close()
