"""Structure of HR fields that tells a credible one from a blocky or drizzly one: the wet fraction
and the seam ratios, accumulated chunk by chunk over the scored points (members pooled).

- wet fraction = #(x > wet_mm) / #points;
- seam ratio   = mean |x[i+1] - x[i]| over the neighbour pairs (i, i+1) that straddle an edge
                 / the same mean over reference pairs,
  rows and columns pooled, a pair counting where both its pixels are scored points.
  LR cells: the edges lie every s pixels, pairs (s*k - 1, s*k); reference = the pairs inside cells.
  A field with no trace of the LR grid scores about 1, a blocky one (steps at cell edges) above 1.
  Sampling tiles: the edges are the tiles' first and last pixels inside the domain; reference = the
  other cell-edge pairs (tiles lie on the LR grid), so it measures the tiles beyond any cell seam.
"""

from __future__ import annotations

import numpy as np

from hpcsr.sampling.tiles import TileLayout


def cell_edge_pairs(n: int, s: int) -> np.ndarray:
    """(n - 1,) bool: pair (i, i+1) along an axis of n pixels straddles an LR-cell edge, (i + 1) % s == 0."""
    return (np.arange(1, n) % s) == 0


def tile_edge_pairs(hr_shape: tuple[int, int], s: int, tile: int, overlap: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Pairs at the sampler's tile edges along y and x ((Y - 1,), (X - 1,) bool), laid out as
    `hpcsr.sampling.tiles.TileLayout` places the tiles; None when the domain is a single tile."""
    Y, X = hr_shape
    layout = TileLayout(s, Y // s, X // s, tile, overlap)
    edges = []
    for axis, n in enumerate((Y, X)):
        pairs = np.zeros(n - 1, dtype=bool)
        for k in range(len(layout)):
            span = layout.hr_slices(k)[axis]
            for edge in (span.start, span.stop):
                if 0 < edge < n:
                    pairs[edge - 1] = True
        edges.append(pairs)
    return tuple(edges) if any(p.any() for p in edges) else None


def union_edges(a, b):
    """Pairs at the edges of either of two tilings (`tile_edge_pairs` results, None: no edge)."""
    if a is None or b is None:
        return a if b is None else b
    return tuple(x | y for x, y in zip(a, b))


class FieldStructure:
    """Running sums of one forecast (or the truth, as one member): wet points and, per pair
    position along y and along x, the sum of |neighbour differences| and the number of pairs."""

    def __init__(self, hr_shape: tuple[int, int], wet_mm: float):
        Y, X = hr_shape
        self.wet_mm = wet_mm
        self.wet = self.points = 0
        self.sums = (np.zeros(Y - 1), np.zeros(X - 1))
        self.pairs = (np.zeros(Y - 1, dtype=np.int64), np.zeros(X - 1, dtype=np.int64))

    def add(self, field: np.ndarray, scored: np.ndarray) -> None:
        """field (members, T, Y, X), scored (T, Y, X): only scored points and pairs of scored points count."""
        m = field.shape[0]
        self.wet += int(np.sum((field > self.wet_mm) & scored))
        self.points += m * int(scored.sum())
        for axis, (sums, pairs) in enumerate(zip(self.sums, self.pairs)):
            a = axis - 2  # y, then x
            both = np.delete(scored, -1, axis=a) & np.delete(scored, 0, axis=a)  # pairs of scored points
            gap = np.where(both, np.abs(np.diff(field, axis=a)), 0.0)
            other = (0, 1, 3 - axis)  # member, time and the axis along the edges
            sums += gap.sum(axis=other, dtype=np.float64)
            pairs += m * both.sum(axis=(0, 2 - axis))

    def wet_fraction(self) -> float:
        """#(x > wet_mm) / #scored points (members pooled); NaN without points."""
        return self.wet / self.points if self.points else float("nan")

    def edge_ratio(
        self, edges: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]
    ) -> float | None:
        """Mean |difference| over the `edges` pairs / mean over the `reference` pairs (y and x pooled);
        None when either set has no pair or both means are 0, inf when only the reference mean is 0
        (a field constant inside cells but not across them; null in JSON)."""

        def mean(select):
            n = sum(int(count[chosen].sum()) for count, chosen in zip(self.pairs, select))
            return sum(float(total[chosen].sum()) for total, chosen in zip(self.sums, select)) / n if n else None

        edge, ref = mean(edges), mean(reference)
        if edge is None or ref is None or edge == ref == 0:
            return None
        return edge / ref if ref > 0 else float("inf")

    def seam_ratio(self, s: int) -> float | None:
        """Mean |difference| across LR-cell edges / mean inside cells; None for s = 1 (no inside pairs)."""
        edges = tuple(cell_edge_pairs(len(p) + 1, s) for p in self.pairs)
        return self.edge_ratio(edges, tuple(~e for e in edges))

    def tile_seam_ratio(self, s: int, tile_edges: tuple[np.ndarray, np.ndarray]) -> float | None:
        """Mean |difference| across the sampling tiles' edges / mean across the other LR-cell edges."""
        cells = tuple(cell_edge_pairs(len(p) + 1, s) for p in self.pairs)
        return self.edge_ratio(tile_edges, tuple(c & ~t for c, t in zip(cells, tile_edges)))

    def scores(self, s: int, tile_edges: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        """{'wet_fraction', 'seam_ratio'} and 'tile_seam_ratio' when the tile edges are given."""
        out = {"wet_fraction": self.wet_fraction(), "seam_ratio": self.seam_ratio(s)}
        if tile_edges is not None:
            out["tile_seam_ratio"] = self.tile_seam_ratio(s, tile_edges)
        return out
