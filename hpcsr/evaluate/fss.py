"""Fractions skill score (Roberts and Lean 2008) with missing data.

For a threshold q and an n x n neighbourhood (n odd), the fraction at a pixel is the share of the
valid pixels in the window centred on it whose value is >= q (windows are clipped at the domain
edge and at missing pixels, so NaN never counts as dry). Over all pixels where the truth and the
forecast are valid,

    FSS = 1 - sum (F - O)^2 / (sum F^2 + sum O^2),

with F the forecast fraction and O the observed fraction; the sums run over every frame, so the
score of a period is the ratio of summed terms, not a mean of per-frame scores. For an ensemble,
F is the mean of the members' fractions (the neighbourhood ensemble probability); the members'
own terms are returned too. FSS is undefined (NaN) when neither field reaches the threshold.

Window counts come from summed-area tables (cumulative sums over y then x), so every scale costs
four look-ups per pixel whatever its size, and the counts are exact integers.
"""

from __future__ import annotations

import numpy as np


def check_scale(size: int) -> int:
    """Neighbourhood sizes are odd, so the window is centred on its pixel."""
    if isinstance(size, bool) or int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"FSS neighbourhood size {size!r} must be an odd integer >= 1 (e.g. {max(1, int(size) | 1)})")
    return int(size)


def summed_area(mask: np.ndarray) -> np.ndarray:
    """(..., Y, X) booleans -> (..., Y+1, X+1) integer table whose [..., i, j] counts mask[..., :i, :j]."""
    *lead, ny, nx = mask.shape
    table = np.zeros((*lead, ny + 1, nx + 1), dtype=np.int32 if ny * nx < 2**31 else np.int64)
    np.cumsum(mask, axis=-2, dtype=table.dtype, out=table[..., 1:, 1:])
    np.cumsum(table[..., 1:, 1:], axis=-1, out=table[..., 1:, 1:])
    return table


def window_sum(table: np.ndarray, size: int) -> np.ndarray:
    """Sum over the size x size window centred on each pixel (clipped at the edges) from a summed-area table."""
    half = check_scale(size) // 2
    ny, nx = table.shape[-2] - 1, table.shape[-1] - 1
    y0, y1 = np.clip(np.arange(ny) - half, 0, ny), np.clip(np.arange(ny) + half + 1, 0, ny)
    x0, x1 = np.clip(np.arange(nx) - half, 0, nx), np.clip(np.arange(nx) + half + 1, 0, nx)
    rows = table.take(y1, axis=-2) - table.take(y0, axis=-2)  # one axis at a time: contiguous gathers
    return rows.take(x1, axis=-1) - rows.take(x0, axis=-1)


def neighbourhood_fraction(field: np.ndarray, threshold: float, size: int) -> np.ndarray:
    """Share of valid pixels >= threshold in the size x size window around each pixel of `field`
    (..., Y, X); NaN where the window holds no valid pixel."""
    field = np.asarray(field, dtype=np.float64)
    valid = np.isfinite(field)
    hits = window_sum(summed_area(valid & (np.where(valid, field, -np.inf) >= threshold)), size)
    present = window_sum(summed_area(valid), size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present > 0, hits / present.astype(np.float64), np.nan)


def fss_terms(truth: np.ndarray, forecast: np.ndarray, valid: np.ndarray, threshold: float, sizes) -> dict:
    """FSS sums of an ensemble at one threshold for every neighbourhood size.

    truth (T, Y, X), forecast (m, T, Y, X), valid (T, Y, X): where both are scored (the windows see
    only valid pixels). Returns {size: (ensemble (2,), members (m, 2))} with the two sums
    [sum (F - O)^2, sum F^2 + O^2] for the ensemble-mean fraction and for each member.
    """
    present_table = summed_area(valid)
    observed_table = summed_area(valid & (np.where(valid, truth, -np.inf) >= threshold))
    member_table = summed_area(valid & (np.where(valid, forecast, -np.inf) >= threshold))
    out = {}
    for size in sizes:
        # fractions are exact counts over counts, kept in float32; >= 1 pixel present wherever valid
        scale = np.where(valid, 1.0 / np.maximum(window_sum(present_table, size), 1), 0.0).astype(np.float32)
        observed = window_sum(observed_table, size).astype(np.float32) * scale
        members = window_sum(member_table, size).astype(np.float32) * scale
        mean = members.mean(axis=0)
        ensemble = np.array(
            [
                np.sum((mean - observed) ** 2, dtype=np.float64),
                np.sum(mean**2, dtype=np.float64) + np.sum(observed**2, dtype=np.float64),
            ]
        )
        axes = tuple(range(1, members.ndim))
        per_member = np.stack(
            [
                np.sum((members - observed) ** 2, axis=axes, dtype=np.float64),
                np.sum(members**2, axis=axes, dtype=np.float64) + np.sum(observed**2, dtype=np.float64),
            ],
            axis=1,
        )
        out[size] = (ensemble, per_member)
    return out


def fss_from_terms(mismatch: float, reference: float) -> float:
    """1 - mismatch / reference; NaN when the reference is 0 (no event in either field)."""
    return float("nan") if reference <= 0 else 1.0 - mismatch / reference
