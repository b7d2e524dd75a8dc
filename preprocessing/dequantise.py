"""Dequantisation of a radar product that rounds its amounts to a step q (BoM Rainfields3 in
../shared/data: every value a multiple of 0.05 mm per 10 min): the smoothest field that the same
rounding would give back, so that a model trained on it does not learn the rounding steps as texture.

Each wet pixel x (> 0) may move inside its rounding bin [x - q/2, x + q/2] (and >= 0); dry pixels
(0) stay exactly 0 and missing ones (NaN) stay NaN. Inside those bounds, ROUNDS rounds of a 3 x 3
box mean (edges padded with the nearest pixel, missing pixels read as 0), each projected back into
the bins (alternating projections). Heavy rain, whose neighbours differ by many q, moves by at most
q/2; light rain, a few q, loses the steps between levels. Why (docs/SKILL_LOG.md, s42):
BoM's light rain is 4-15 x rougher at the pixel scale than KNMI's (0.01 mm steps), and members
trained on it carried 2-2.7 x the unseen radar's power at 2-3 px; trained on the dequantised file,
(4,2) 1.24-2.14 -> 0.84-1.42 x, but (4,1)'s members lost half their power at every scale and became
under-dispersed (spread/skill 0.82 -> 0.60), so nothing uses it by default.
"""

from __future__ import annotations

import numpy as np

ROUNDS = 20  # blur-and-project rounds


def _box3(f: np.ndarray) -> np.ndarray:
    """3 x 3 mean of a 2-D array, edges padded with the nearest pixel."""
    p = np.pad(f, 1, mode="edge")
    Y, X = f.shape
    return sum(p[dy : dy + Y, dx : dx + X] for dy in range(3) for dx in range(3)) / 9.0


def dequantise(mm: np.ndarray, q: float) -> np.ndarray:
    """2-D frame in mm (NaN missing) rounded to multiples of q -> float32 frame (see the module)."""
    if not q > 0:
        raise ValueError(f"dequantise step q={q} must be > 0 mm")
    if mm.ndim != 2:
        raise ValueError(f"dequantise takes one 2-D frame, got shape {mm.shape}")
    missing = ~np.isfinite(mm)
    x = np.where(missing, 0.0, mm).astype(np.float64)
    wet = x > 0
    lo = np.where(wet, np.maximum(x - q / 2, 0.0), 0.0)
    hi = np.where(wet, x + q / 2, 0.0)
    y = x
    for _ in range(ROUNDS):
        y = np.clip(_box3(y), lo, hi)
    return np.where(missing, np.nan, y).astype(np.float32)
