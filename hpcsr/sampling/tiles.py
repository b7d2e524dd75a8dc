"""Overlapping tiles over a full domain and their seam-free blending.

A domain of ny x nx LR cells (HR grid s*ny x s*nx) is covered by tiles of p x p LR cells (the
model's patch, P = s*p HR pixels) that start every p - o cells (o = overlap / s), the last tile of
each row and column moved back to end exactly at the domain's edge. Tiles lie on the LR grid, so
every tile sees whole LR cells, as in training. A domain side shorter than the tile gets one
tile of the domain's side.

Blending: each tile's values are weighted by a separable window that is 1 inside and rises as
sin^2 over the `overlap` HR pixels next to every tile edge that lies inside the domain (a raised
cosine; edges on the domain boundary keep weight 1; where the overlap is more than half the tile the
two ramps cross and the lower one holds); the weighted sum is divided by the sum of the
weights, so the weights at every pixel sum to 1. A tile's weight thus fades to ~0 at its own edge
and no tile's border shows as a step. 'uniform' (weight 1 everywhere: a plain average in the
overlaps) is the comparison that does show steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

WINDOWS = ("cosine", "uniform")


def default_overlap(tile: int, s: int) -> int:
    """About a quarter of the tile, rounded up to whole LR cells, at least two cells and at most half
    the tile (one cell for tiles of two or three cells, none for a one-cell tile).

    Why two cells: a tile's outputs are disturbed about one LR cell in from its edge (the LR context
    stops there), and a one-cell ramp blends right across that band. At (8, 2) with 32 px tiles (four
    cells) the one-cell overlap left the tile edges visible on KNMI (benchmarks/skill_experiment.py:
    tile seam ratio 1.13 members, 1.24 mean network; LR-cell seams of the mean 1.10); two cells gave
    1.02 / 0.97 and 1.08, and fair CRPS / bicubic MAE 0.664 instead of 0.669, for 2.25 x the tiles."""
    cells = tile // s
    return s * min(max(2, math.ceil(cells / 4)), cells // 2)


def mean_overlap(tile: int, s: int) -> int:
    """The mean network's overlap: half the tile, in whole LR cells (none for a one-cell tile), so
    every pixel's mean comes from tiles it lies well inside of. That is about twice the tiles (49
    instead of 25 on a 128 px crop with 32 px tiles at s = 4), run once per target, where the denoiser
    runs its tiles at every step of every member; the denoiser
    keeps `default_overlap` (a wider one costs members' small-scale power, see hpcsr.sampling.ensemble).
    Measured on KNMI (benchmarks/skill_experiment.py, s45's trainings, s49): with 32 px tiles at
    (4, 1) / (4, 2), a quarter tile -> a half, the mean's tile seam ratio 1.089 / 1.087 -> 1.039 /
    1.030 (criterion <= 1.1; the truth scores 1.045 at the same pixels), the members' 1.072 / 1.073 ->
    1.021 / 1.006, the mean's RMSE 0.6 / 0.1 % lower, its LR-cell seams 1.091 / 1.060 -> 1.095 /
    1.056; at (8, 2) both rules give 16 px. Denser still (s52, the committed run's networks): a tile
    every quarter tile (sample.overlap=24 with 32 px tiles at s = 4, 169 tiles instead of 49) lowers
    the (4, 1) / (4, 2) mean's RMSE by 0.3 / 0.02 % and its tile seams to 1.012 / 1.006, (4, 1)'s CRPS
    0.666 -> 0.663, but the mean then costs 3.6 x and the whole sampling of the crop with 4 members
    takes 22 % longer (benchmarks/mean_tiling.py, one thread: 13.2 -> 47.6 s and 96.7 -> 117.6 s):
    an option (docs/SKILL_LOG.md)."""
    return s * ((tile // s) // 2)


def starts(n: int, size: int, stride: int) -> list[int]:
    """Start positions of tiles of `size` every `stride` covering 0..n, the last one ending at n."""
    if size >= n:
        return [0]
    out = list(range(0, n - size + 1, stride))
    if out[-1] != n - size:
        out.append(n - size)
    return out


def ramp(size: int, overlap: int, rise_start: bool, rise_end: bool, window: str) -> torch.Tensor:
    """1-D weights of one tile side: sin^2 rises over `overlap` pixels at the inner ends."""
    w = torch.ones(size, dtype=torch.float64)
    if window == "uniform" or overlap == 0:
        return w
    k = torch.arange(overlap, dtype=torch.float64)
    rise = torch.sin(0.5 * math.pi * (k + 0.5) / overlap) ** 2
    if rise_start:
        w[:overlap] = rise
    if rise_end:
        w[size - overlap :] = torch.minimum(w[size - overlap :], rise.flip(0))
    return w


@dataclass(frozen=True)
class TileLayout:
    """Tiles of one domain: `corners` (K, 2) LR-cell (row, col) of each tile's top-left cell."""

    s: int
    ny: int  # domain rows, LR cells
    nx: int  # domain columns, LR cells
    tile: int  # requested HR tile side (multiple of s)
    overlap: int  # HR pixels shared by neighbouring tiles (multiple of s)
    window: str = "cosine"

    def __post_init__(self):
        s = self.s
        if self.tile < s or self.tile % s:
            raise ValueError(
                f"tile={self.tile} HR pixels must be a positive multiple of s={s}: "
                f"use {max(s, self.tile - self.tile % s)} (the recipe's patch is the natural choice)"
            )
        if self.overlap < 0 or self.overlap % s:
            raise ValueError(
                f"overlap={self.overlap} HR pixels must be a non-negative multiple of s={s}: "
                f"use {self.overlap - self.overlap % s} or {self.overlap - self.overlap % s + s}"
            )
        if self.overlap >= self.tile:
            raise ValueError(
                f"overlap={self.overlap} leaves no stride between tiles of {self.tile}: use at most {self.tile - s}"
            )
        if self.window not in WINDOWS:
            raise ValueError(f"blend window {self.window!r} unknown: use one of {', '.join(WINDOWS)}")
        if self.ny < 1 or self.nx < 1:
            raise ValueError(f"domain of {self.ny} x {self.nx} LR cells is empty")

    @property
    def cells(self) -> tuple[int, int]:
        """Tile side in LR cells (rows, cols): the requested tile, or the domain where it is smaller."""
        p = self.tile // self.s
        return min(p, self.ny), min(p, self.nx)

    @property
    def hr_shape(self) -> tuple[int, int]:
        return self.ny * self.s, self.nx * self.s

    @property
    def tile_shape(self) -> tuple[int, int]:
        """HR side of every tile (all tiles have the same shape)."""
        py, px = self.cells
        return py * self.s, px * self.s

    @property
    def corners(self) -> list[tuple[int, int]]:
        py, px = self.cells
        o = self.overlap // self.s
        rows = starts(self.ny, py, max(1, py - o))
        cols = starts(self.nx, px, max(1, px - o))
        return [(r, c) for r in rows for c in cols]

    def __len__(self) -> int:
        return len(self.corners)

    def lr_slices(self, k: int) -> tuple[slice, slice]:
        r, c = self.corners[k]
        py, px = self.cells
        return slice(r, r + py), slice(c, c + px)

    def hr_slices(self, k: int) -> tuple[slice, slice]:
        r, c = self.corners[k]
        Py, Px = self.tile_shape
        return slice(r * self.s, r * self.s + Py), slice(c * self.s, c * self.s + Px)

    def weights(self, k: int) -> torch.Tensor:
        """(Py, Px) float64 blending window of tile k (before normalisation)."""
        ys, xs = self.hr_slices(k)
        Y, X = self.hr_shape
        Py, Px = self.tile_shape
        wy = ramp(Py, self.overlap, ys.start > 0, ys.stop < Y, self.window)
        wx = ramp(Px, self.overlap, xs.start > 0, xs.stop < X, self.window)
        return wy[:, None] * wx[None, :]


class Blender:
    """Weighted average of per-tile fields (..., Py, Px) into the domain (..., Y, X)."""

    def __init__(self, layout: TileLayout, device=None, dtype=torch.float32):
        self.layout = layout
        Y, X = layout.hr_shape
        self.windows = [layout.weights(k) for k in range(len(layout))]
        total = torch.zeros(Y, X, dtype=torch.float64)
        for k, w in enumerate(self.windows):
            ys, xs = layout.hr_slices(k)
            total[ys, xs] += w
        # normalised windows: at every pixel the weights of the tiles covering it sum to 1
        self.norm = []
        for k, w in enumerate(self.windows):
            ys, xs = layout.hr_slices(k)
            self.norm.append((w / total[ys, xs]).to(device=device, dtype=dtype))

    def blend(self, tiles: torch.Tensor, first: int, out: torch.Tensor) -> torch.Tensor:
        """Add tiles first..first+len(tiles)-1 ((K, ..., Py, Px)) into `out` (..., Y, X), weighted."""
        for i in range(tiles.shape[0]):
            ys, xs = self.layout.hr_slices(first + i)
            out[..., ys, xs] += tiles[i] * self.norm[first + i]
        return out
