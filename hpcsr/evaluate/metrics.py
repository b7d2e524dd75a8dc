"""Pointwise ensemble scores: CRPS (fair and standard), ensemble variance, rank of the truth,
spread-skill ratio.

Conventions: the member axis is axis 0 of `ensemble` (m, ...), `obs` has the remaining shape.
These functions return per-point values (NaN wherever an input is NaN); masking, summing and
counting over a domain is the caller's job (`hpcsr.evaluate.evaluation`).
"""

from __future__ import annotations

import math

import numpy as np

# Fewer members than this make the fair CRPS too noisy to rank models; results are flagged.
MIN_MEMBERS_FOR_CRPS = 10


def crps_ensemble(ensemble: np.ndarray, obs: np.ndarray, fair: bool = True) -> np.ndarray:
    """CRPS of an m-member ensemble at each point, in the units of the data.

    CRPS = mean_i |x_i - y| - D / (2 * w),  D = sum_{i,j} |x_i - x_j|,
    with w = m * (m - 1) for the fair (unbiased) estimator (Ferro 2014: it is the expected CRPS of
    the ensemble's parent distribution, so it does not penalise small ensembles) and w = m * m for
    the standard estimator (the CRPS of the members' empirical distribution, as
    properscoring.crps_ensemble). D is computed from the sorted members,
    D = 2 * sum_k (2k - m - 1) x_(k), in O(m log m) per point.
    """
    ensemble = np.asarray(ensemble, dtype=np.float64)
    m = ensemble.shape[0]
    if fair and m < 2:
        raise ValueError(f"the fair CRPS needs at least 2 members, got {m}: use fair=False (it is then the MAE)")
    skill = np.abs(ensemble - obs).mean(axis=0)
    ranked = np.sort(ensemble, axis=0)
    weights = 2.0 * np.arange(1, m + 1) - m - 1
    pair_sum = 2.0 * np.tensordot(weights, ranked, axes=(0, 0))
    return skill - pair_sum / (2.0 * m * ((m - 1) if fair else m))


def ensemble_variance(ensemble: np.ndarray) -> np.ndarray:
    """Unbiased (ddof=1) variance across members at each point."""
    ensemble = np.asarray(ensemble, dtype=np.float64)
    if ensemble.shape[0] < 2:
        raise ValueError(f"ensemble variance needs at least 2 members, got {ensemble.shape[0]}")
    return ensemble.var(axis=0, ddof=1)


def spread_skill_ratio(mean_variance: float, mean_squared_error: float, members: int) -> float:
    """sqrt((m+1)/m * mean s^2) / RMSE of the ensemble mean.

    s^2 is the unbiased member variance (ddof=1). If the truth is statistically exchangeable with
    the members, the ensemble-mean error has E[e^2] = sigma^2 (1 + 1/m) and E[s^2] = sigma^2, so
    the (m+1)/m factor makes a perfectly dispersed finite ensemble score 1 (Fortin et al. 2014).
    Below 1: under-dispersive; above 1: over-dispersive.
    """
    if mean_squared_error <= 0:
        return float("nan")
    return float(np.sqrt((members + 1) / members * mean_variance / mean_squared_error))


def observation_rank(ensemble: np.ndarray, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of the observation among the members, 0..m, at each point (finite inputs only).

    Ties (common: dry observation and dry members both 0 mm) are broken at random: with b members
    below y and e members equal to y, the rank is b + U{0..e}, so a calibrated ensemble gives a flat
    histogram even at zero precipitation instead of a spike in the lowest bin.
    """
    ensemble = np.asarray(ensemble)
    below = (ensemble < obs).sum(axis=0)
    equal = (ensemble == obs).sum(axis=0)
    return below + rng.integers(0, equal + 1)


def rank_histogram(ranks: np.ndarray, members: int) -> np.ndarray:
    """Counts of each rank 0..m (length m + 1)."""
    return np.bincount(np.asarray(ranks).ravel(), minlength=members + 1)


def rank_ends(counts) -> tuple[float, float]:
    """(lowest, highest) rank's share of a rank histogram as a multiple of a flat histogram's (1:
    calibrated; the lowest far above 1: the truth below every member too often, members too wet)."""
    counts = np.asarray(counts, float)
    flat = counts.mean()
    if not flat > 0:
        return math.nan, math.nan
    return float(counts[0] / flat), float(counts[-1] / flat)
