"""Normalisation statistics of the train split, accumulated piecewise on any number of ranks and
reduced to the same numbers whatever the split of the work.

Two mergeable pieces: a histogram (integer counts, so the order of summation does not matter) and,
for float data, one row of float64 moments per frame or block (reduced with math.fsum, which is
exactly rounded and so order-independent). For Comephore's uint16 tenths the histogram is over the
codes themselves, so quantiles and moments are exact. For float values the histogram has bins of
0.001 in log1p(mm) (relative resolution 0.1 % above ~1 mm, 0.001 mm below) with exact zeros in a
bin of their own; quantiles are bin centres and moments come from the exact rows.
"""

from __future__ import annotations

import math

import numpy as np

QUANTILE_LEVELS = (0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999)
LOG_BINS_PER_UNIT = 1000  # histogram bins per unit of log1p(mm)
MOMENT_FIELDS = ("n", "sum", "sumsq", "log1p_sum", "log1p_sumsq", "dry", "max")


def log_bin_values(n_bins: int) -> np.ndarray:
    """Representative mm value of each log bin (0 for bin 0, the bin centre otherwise)."""
    k = np.arange(n_bins, dtype=np.float64)
    return np.where(k == 0, 0.0, np.expm1((k - 0.5) / LOG_BINS_PER_UNIT))


def float_pieces(values: np.ndarray, wet_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(moments row, log-bin histogram) of the non-NaN values (non-negative mm) of an array: the row
    is float64 (n, sum, sumsq, log1p_sum, log1p_sumsq, dry, max); bin 0 holds exact zeros, bin
    k >= 1 the values with floor(1000 log1p(v)) = k - 1. Zeros (most precipitation values) add
    nothing to the sums, so only the wet values are extracted and transformed."""
    n = values.size - int(np.count_nonzero(np.isnan(values)))
    wet = np.extract(values > 0, values).astype(np.float64)
    lp = np.log1p(wet)
    dry = n - wet.size
    row = np.array(
        [
            n,
            wet.sum(),
            np.dot(wet, wet),
            lp.sum(),
            np.dot(lp, lp),
            dry + np.count_nonzero(wet < wet_threshold),
            wet.max(initial=0.0) if n else -np.inf,
        ]
    )
    np.multiply(lp, LOG_BINS_PER_UNIT, out=wet)  # wet is no longer needed: its buffer takes the bin positions
    counts = np.bincount(wet.astype(np.int64))
    hist = np.empty(counts.size + 1, np.int64)
    hist[0] = dry
    hist[1:] = counts
    return row, hist


def code_histogram(raw: np.ndarray, fill) -> np.ndarray:
    """Counts of each uint16 code (65536 bins), the fill code excluded. Dry pixels (code 0, most
    of them) are counted apart and only wet codes are binned, which makes this several times
    faster than one bincount."""
    flat = raw.ravel()
    h = np.bincount(flat[(flat != 0) & (flat != fill)], minlength=65536).astype(np.int64, copy=False)
    h[0] = flat.size - np.count_nonzero(flat)
    return h


def add_hist(total: np.ndarray | None, h: np.ndarray) -> np.ndarray:
    if total is None:
        return h.copy()
    if len(h) > len(total):
        total, h = h.copy(), total
    total[: len(h)] += h
    return total


def _quantiles(hist: np.ndarray, values: np.ndarray, levels) -> list[float]:
    n = hist.sum()
    if n == 0:
        return [math.nan] * len(levels)
    cum = np.cumsum(hist)
    out = []
    for q in levels:
        rank = q * (n - 1)
        out.append(float(values[int(np.searchsorted(cum, math.floor(rank) + 1))]))
    return out


def summarise(
    hist: np.ndarray | None, rows: np.ndarray | None, value_of_bin: np.ndarray, wet_threshold: float, prefix: str
) -> tuple[dict, dict]:
    """({prefix_mean, prefix_std, prefix_log1p_mean, prefix_log1p_std, prefix_max, count_prefix},
    {prefix_quantiles: [...], prefix_wet_quantiles: [...]}) from a histogram and optional exact rows
    (rows None: moments from the histogram itself, exact for code histograms). Also 'dry' count."""
    if hist is None or hist.sum() == 0:
        raise ValueError(
            f"no valid {prefix.upper()} value in the train split: the split is empty or all missing; "
            "give more data or change the split fractions/bounds"
        )
    hist = hist.astype(np.int64)
    vals = value_of_bin[: len(hist)]
    if rows is None:
        n = float(hist.sum())
        lp = np.log1p(vals)
        s1, s2 = float(np.dot(hist, vals)), float(np.dot(hist, vals * vals))
        l1, l2 = float(np.dot(hist, lp)), float(np.dot(hist, lp * lp))
        dry = float(hist[vals < wet_threshold].sum())
        vmax = float(vals[np.flatnonzero(hist)[-1]])
    else:
        n, s1, s2, l1, l2, dry = (math.fsum(rows[:, j]) for j in range(6))
        vmax = float(rows[:, 6].max())
    mean, lmean = s1 / n, l1 / n
    scalars = {
        f"{prefix}_mean": mean,
        f"{prefix}_std": math.sqrt(max(s2 / n - mean * mean, 0.0)),
        f"{prefix}_log1p_mean": lmean,
        f"{prefix}_log1p_std": math.sqrt(max(l2 / n - lmean * lmean, 0.0)),
        f"{prefix}_max": vmax,
        f"count_{prefix}": n,
        f"_{prefix}_dry": dry,
    }
    wet_hist = np.where(vals >= wet_threshold, hist, 0)
    arrays = {
        f"{prefix}_quantiles": _quantiles(hist, vals, QUANTILE_LEVELS),
        f"{prefix}_wet_quantiles": _quantiles(wet_hist, vals, QUANTILE_LEVELS),
    }
    return scalars, arrays
