"""Fractions skill score (Roberts and Lean 2008) with missing data.

For a threshold q and an n x n neighbourhood, the fraction at a pixel is the share of the valid
pixels in the window centred on it whose value is >= q (windows are clipped at the domain edge and
at missing pixels, so NaN never counts as dry). Over all pixels where the truth is valid,

    FSS = 1 - sum (F - O)^2 / (sum F^2 + sum O^2),

with F the forecast fraction and O the observed fraction; the sums run over every frame, so the
score of a period is the ratio of summed terms, not a mean of per-frame scores. For an ensemble,
F is the mean of the members' fractions (the neighbourhood ensemble probability). FSS is undefined
(NaN) when neither field reaches the threshold anywhere.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter


def check_scale(size: int) -> int:
    """Neighbourhood sizes are odd, so the window is centred on its pixel."""
    if isinstance(size, bool) or int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"FSS neighbourhood size {size!r} must be an odd integer >= 1 (e.g. {max(1, int(size) | 1)})")
    return int(size)


def neighbourhood_fraction(field: np.ndarray, threshold: float, size: int) -> np.ndarray:
    """Share of valid pixels >= threshold in the size x size window around each pixel of `field`
    (..., Y, X); NaN where the window holds no valid pixel."""
    size = check_scale(size)
    field = np.asarray(field, dtype=np.float64)
    valid = np.isfinite(field)
    exceed = np.where(valid, field >= threshold, False).astype(np.float64)
    if size == 1:
        return np.where(valid, exceed, np.nan)
    window = (1,) * (field.ndim - 2) + (size, size)
    hits = uniform_filter(exceed, size=window, mode="constant", cval=0.0)
    present = uniform_filter(valid.astype(np.float64), size=window, mode="constant", cval=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present > 0.5 / size**2, hits / present, np.nan)


def fss_terms(forecast_fraction: np.ndarray, observed_fraction: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(sum (F - O)^2, sum F^2 + O^2) over `mask`: the two sums FSS is made of."""
    f = forecast_fraction[mask]
    o = observed_fraction[mask]
    return float(np.sum((f - o) ** 2)), float(np.sum(f**2) + np.sum(o**2))


def fss_from_terms(mismatch: float, reference: float) -> float:
    """1 - mismatch / reference; NaN when the reference is 0 (no event in either field)."""
    return float("nan") if reference <= 0 else 1.0 - mismatch / reference
