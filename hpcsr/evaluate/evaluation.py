"""`evaluate`: every score of an HR ensemble, and of the baselines, against the HR truth.

One pass over the time axis in chunks of whole LR blocks, so inputs may be lazy arrays (xarray
variables of an open netCDF, h5py datasets) larger than memory: each chunk is read, scored into
running sums, and dropped. All scores are NaN-aware: a point counts only where the truth and the
forecast (every member) are finite, and the counts are reported.

Array layout: truth (T, Y, X) and ensemble (members, T, Y, X) in mm per HR step; lr (T/t, Y/s, X/s)
in mm per HR step (block means, as `hpcsr.coarsen.coarsen` makes them); `mean` (T, Y, X) the mean
network's prediction. Thresholds are in mm per HR step, FSS scales in HR pixels (odd).

Credibility of the fields (hpcsr.evaluate.structure, spectra): the wet fraction and its ratio to the
truth's, the seam ratios at LR-cell edges (and at the sampler's tile edges when the tiling is
given), and the spectral ratio to the truth over wavelengths of 2 .. s HR pixels.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
from tqdm import tqdm

from hpcsr.coarsen import coarsen
from hpcsr.evaluate import baselines as bl
from hpcsr.evaluate.fss import check_scale, fss_from_terms, fss_terms
from hpcsr.evaluate.mass_error import MassSums, mass_error_sums
from hpcsr.evaluate.metrics import (
    MIN_MEMBERS_FOR_CRPS,
    crps_ensemble,
    ensemble_variance,
    observation_rank,
    rank_histogram,
    spread_skill_ratio,
)
from hpcsr.evaluate.quantiles import UpperTail
from hpcsr.evaluate.spectra import log_spectral_distance, radial_power_spectrum, spectral_ratio
from hpcsr.evaluate.structure import FieldStructure, tile_edge_pairs, union_edges
from hpcsr.factors import FactorPair

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.1, 1.0, 5.0)  # mm per HR step
DEFAULT_SCALES = (1, 5, 15, 45)  # HR pixels, odd
DEFAULT_QUANTILES = (0.99, 0.999, 0.9999)
QQ_LEVELS = tuple(1.0 - 10.0 ** -np.linspace(1.0, 4.0, 13))  # 0.9 .. 0.9999 for the QQ plot
CHUNK_VALUES = 2**23  # ensemble values read per chunk when time_chunk is not given
WET_MM_PER_HOUR = 0.1  # wet threshold as a rate; per HR step it is 0.1 * interval_minutes / 60 mm
ASSUMED_INTERVAL_MINUTES = 10  # HR step assumed for the wet threshold when the data do not say


class _ForecastScores:
    """Running sums of every score of one forecast (an ensemble, or a baseline as 1 member)."""

    def __init__(self, members, capacity, thresholds, scales, lowest_level, s, t, tile_cells, structure, tile_edges):
        self.members, self.s, self.t, self.tile_cells = members, s, t, tile_cells
        self.structure, self.tile_edges = structure, tile_edges
        self.thresholds, self.scales = thresholds, scales
        self.n_truth = self.n_valid = 0
        self.sq = self.abs = self.crps = self.crps_standard = self.variance = 0.0
        self.ranks = np.zeros(members + 1, dtype=np.int64)
        self.truth_tail = UpperTail(capacity, lowest_level)
        self.forecast_tail = UpperTail(capacity * members, lowest_level)
        self.fss = {(q, n): np.zeros(2) for q in thresholds for n in scales}
        self.fss_member = {(q, n): np.zeros((members, 2)) for q in thresholds for n in scales}
        self.events = {q: 0 for q in thresholds}
        self.mass = MassSums()

    def update(self, truth, forecast, lr, rng, scored):
        """Add one chunk; only the points of `scored` (where the truth and every forecast are
        valid) count, so all forecasts are scored on the same points."""
        m = self.members
        valid = scored & np.isfinite(forecast).all(axis=0)
        self.n_truth += int(np.isfinite(truth).sum())
        self.n_valid += int(valid.sum())
        self.mass.add(mass_error_sums(forecast, lr, self.s, self.t, self.tile_cells))
        if not valid.any():
            return
        self.structure.add(forecast, valid)
        y = truth[valid].astype(np.float64)
        x = forecast[:, valid].astype(np.float64)
        error = x.mean(axis=0) - y
        self.sq += float(np.sum(error**2))
        self.abs += float(np.sum(np.abs(error)))
        if m > 1:
            self.crps += float(crps_ensemble(x, y, fair=True).sum())
            self.crps_standard += float(crps_ensemble(x, y, fair=False).sum())
            self.variance += float(ensemble_variance(x).sum())
            self.ranks += rank_histogram(observation_rank(x, y, rng), m)
        self.truth_tail.add(y)
        self.forecast_tail.add(x)
        for q in self.thresholds:
            self.events[q] += int(np.sum(y >= q))
            for n, (ensemble_terms, member_terms) in fss_terms(truth, forecast, valid, q, self.scales).items():
                self.fss[q, n] += ensemble_terms
                self.fss_member[q, n] += member_terms

    def result(self, quantile_levels) -> dict:
        m, n = self.members, self.n_valid
        nan = float("nan")
        out = {
            "members": m,
            "deterministic": m == 1,
            "n_truth_valid": self.n_truth,
            "n_valid": n,
            "n_forecast_missing": self.n_truth - n,
            "rmse": math.sqrt(self.sq / n) if n else nan,
            "mae": self.abs / n if n else nan,
            # a point forecast's CRPS is its absolute error
            "crps": (self.crps / n if m > 1 else self.abs / n) if n else nan,
            "flags": [],
        }
        if m > 1:
            out["crps_standard"] = self.crps_standard / n if n else nan
            out["spread"] = math.sqrt(self.variance / n) if n else nan
            out["spread_skill_ratio"] = spread_skill_ratio(self.variance / n, self.sq / n, m) if n else nan
            out["rank_histogram"] = self.ranks.tolist()
            if m < MIN_MEMBERS_FOR_CRPS:
                out["flags"].append(f"fewer_than_{MIN_MEMBERS_FOR_CRPS}_members")
        out["quantiles"] = {}
        for level in quantile_levels:
            truth_q, forecast_q = self.truth_tail.quantile(level), self.forecast_tail.quantile(level)
            out["quantiles"][f"{level:g}"] = {
                "truth": truth_q,
                "forecast": forecast_q,
                "error": forecast_q - truth_q,
                "relative_error": (forecast_q - truth_q) / truth_q if truth_q > 0 else nan,
            }
        out["qq"] = {
            "levels": list(QQ_LEVELS),
            "truth": [self.truth_tail.quantile(v) for v in QQ_LEVELS],
            "forecast": [self.forecast_tail.quantile(v) for v in QQ_LEVELS],
        }
        out["fss"] = {f"{q:g}": {str(k): fss_from_terms(*self.fss[q, k]) for k in self.scales} for q in self.thresholds}
        if m > 1:
            out["fss_member_mean"] = {
                f"{q:g}": {
                    str(k): float(np.nanmean([fss_from_terms(*row) for row in self.fss_member[q, k]]))
                    if np.any(self.fss_member[q, k][:, 1] > 0)
                    else nan
                    for k in self.scales
                }
                for q in self.thresholds
            }
        # FSS above 0.5 + f_o / 2 is "useful" (Roberts and Lean 2008), f_o the observed base rate
        out["fss_useful"] = {f"{q:g}": (0.5 + self.events[q] / n / 2) if n else nan for q in self.thresholds}
        out["mass"] = self.mass.scores()
        out.update(self.structure.scores(self.s, self.tile_edges))
        return out


def _check_inputs(
    truth, ensemble, lr, mean, s, t, baselines, thresholds, scales, quantile_levels, tile_cells, time_chunk
):
    pair = FactorPair(s, t)
    if len(truth.shape) != 3:
        raise ValueError(f"truth must be (time, y, x), got shape {tuple(truth.shape)}")
    if len(ensemble.shape) != 4:
        raise ValueError(
            f"ensemble must be (member, time, y, x), got shape {tuple(ensemble.shape)}: "
            "add a member axis of length 1 for a single forecast"
        )
    if tuple(ensemble.shape[1:]) != tuple(truth.shape):
        raise ValueError(
            f"ensemble (member, time, y, x) = {tuple(ensemble.shape)} does not match truth {tuple(truth.shape)}"
        )
    T, Y, X = truth.shape
    if T % t:
        raise ValueError(f"{T} HR steps are not whole LR blocks of t={t}: trim to {T - T % t} steps")
    if Y % s or X % s:
        raise ValueError(f"HR grid {Y} x {X} is not divisible by s={s}: crop to {Y - Y % s} x {X - X % s}")
    if lr is not None and tuple(lr.shape) != (T // t, Y // s, X // s):
        raise ValueError(
            f"LR has shape {tuple(lr.shape)}, but {T} x {Y} x {X} HR at (s={s}, t={t}) needs "
            f"{(T // t, Y // s, X // s)}: check the factor pair and that LR and HR cover the same steps and grid"
        )
    unknown = [b for b in baselines if b not in bl.NAMES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}: choose from {bl.NAMES}")
    if "mean" in baselines and mean is None:
        raise ValueError(
            "baseline 'mean' needs the mean network's prediction: pass mean=array (T, Y, X) "
            "(command line: --mean FILE, or a precip_mean variable in the ensemble file)"
        )
    if mean is not None:
        if tuple(mean.shape) != (T, Y, X):
            raise ValueError(
                f"mean prediction has shape {tuple(mean.shape)}, truth has {(T, Y, X)}: give it for the same steps and grid"
            )
    if not thresholds or any(not np.isfinite(q) for q in thresholds):
        raise ValueError(f"FSS thresholds {thresholds!r} must be a non-empty list of finite values (mm per HR step)")
    for n in scales:
        check_scale(n)
    if any(not 0.0 < q < 1.0 for q in quantile_levels):
        raise ValueError(f"quantile levels {quantile_levels!r} must lie in (0, 1)")
    if tile_cells is not None and (tile_cells < 1 or (Y // s) % tile_cells or (X // s) % tile_cells):
        raise ValueError(
            f"tile_cells={tile_cells} does not divide the LR grid {Y // s} x {X // s}: pick a common divisor or None"
        )
    if time_chunk is not None and time_chunk < 1:
        raise ValueError(f"time_chunk={time_chunk} must be a positive number of HR steps (or None)")
    return pair


def wet_threshold(wet_mm: float | None, interval_minutes: float | None) -> tuple[float, str]:
    """The wet threshold in mm per HR step and the rule that chose it: `wet_mm` when given, else
    WET_MM_PER_HOUR accumulated over the HR step (interval_minutes / 60 h), else over an assumed
    ASSUMED_INTERVAL_MINUTES step (0.1 / 6 mm)."""
    if wet_mm is not None:
        if not (np.isfinite(wet_mm) and wet_mm >= 0):
            raise ValueError(f"wet threshold wet_mm={wet_mm!r} must be a finite amount >= 0 mm per HR step")
        return float(wet_mm), "given"
    if interval_minutes is None:
        minutes, note = ASSUMED_INTERVAL_MINUTES, ", step length unknown: assumed"
    elif np.isfinite(interval_minutes) and interval_minutes > 0:
        minutes, note = interval_minutes, ""
    else:
        raise ValueError(f"interval_minutes={interval_minutes!r} must be the HR step in minutes (> 0), or None")
    return WET_MM_PER_HOUR * minutes / 60.0, f"{WET_MM_PER_HOUR:g} mm/h over {minutes:g}-min HR steps{note}"


def perfect_model_lr(truth, s: int, t: int, chunk: int = 240):
    """coarsen(truth, s, t) read `chunk` HR steps (a multiple of t) at a time."""
    chunk = max(t, chunk // t * t)
    return np.concatenate(
        [coarsen(np.asarray(truth[a : a + chunk], dtype=np.float32), s, t) for a in range(0, truth.shape[0], chunk)]
    )


def _tiles_record(tiles: tuple[int, ...]) -> dict:
    record = {"tile_px": tiles[0], "overlap_px": tiles[1]}
    return record if len(tiles) < 3 else {**record, "residual_overlap_px": tiles[2]}


def _undefined(s, forecasts, spectra, tiles, tile_edges) -> dict:
    """{score: why it is None} for the credibility scores a pair or a grid cannot have."""
    out = {}
    if s == 1:
        out["seam_ratio"] = "s = 1: every neighbour pair crosses an LR-cell edge, no pair lies inside a cell"
    if spectra is None:
        out["spectral_ratio"] = "no power spectra (see the warnings)"
    elif s == 1:
        out["spectral_ratio"] = "s = 1: no wavelength lies between 2 HR pixels and the LR cell (1 pixel)"
    elif forecasts["ensemble"]["spectral_ratio"] is None:
        out["spectral_ratio"] = f"no spectral ring of this grid has a wavelength between 2 and s = {s} HR pixels"
    if tiles is not None and tile_edges is None:
        out["tile_seam_ratio"] = "the sampler covered the domain with one tile: no tile edge inside it"
    return out


def evaluate(
    truth,
    ensemble,
    lr=None,
    s: int = 1,
    t: int = 1,
    *,
    baselines=("nearest", "bicubic"),
    mean=None,
    thresholds=DEFAULT_THRESHOLDS,
    scales=DEFAULT_SCALES,
    quantile_levels=DEFAULT_QUANTILES,
    tile_cells: int | None = None,
    time_chunk: int | None = None,
    seed: int = 0,
    spectrum_window: str | None = "hann",
    pixel_size_km: float | None = None,
    wet_mm: float | None = None,
    interval_minutes: float | None = None,
    tiles: tuple[int, int] | None = None,
    progress: bool = True,
) -> dict:
    """Score `ensemble` and the named `baselines` against `truth`; returns a JSON-ready dict (NaN for undefined).

    truth (T, Y, X), ensemble (members, T, Y, X), lr (T/t, Y/s, X/s) or None for the perfect-model LR
    `coarsen(truth, s, t)`; mean (T, Y, X) adds the 'mean' (mean network only) baseline. Any
    array-like indexable by [a:b] works (numpy, xarray, h5py). `tile_cells`: tile side in LR cells
    for the tile-scale mass error (None: whole frame). `time_chunk`: HR steps per chunk (rounded
    down to whole LR blocks). `seed`: rank-histogram tie breaking (reproducible for a given seed and
    chunking). Fewer than 10 members: a UserWarning and the flag 'fewer_than_10_members'.
    `wet_mm`: wet threshold in mm per HR step (None: 0.1 mm/h over `interval_minutes`, the HR step,
    10 min when that is None too; see `wet_threshold`). `tiles`: (tile side, overlap[, the
    denoiser's overlap]) in HR pixels of the sampler's tiling, for the tile seam ratio (None: not
    scored): the ensemble's at both tilings' edges, the other forecasts' (and the truth's) at the
    first. Scores that a pair cannot have (seam and spectral ratios at s = 1) are None, with the
    reason under 'undefined'.
    """
    baselines = tuple(baselines) + (("mean",) if mean is not None and "mean" not in baselines else ())
    thresholds, scales = tuple(float(q) for q in thresholds), tuple(int(n) for n in scales)
    quantile_levels = tuple(float(q) for q in quantile_levels)
    pair = _check_inputs(
        truth, ensemble, lr, mean, s, t, baselines, thresholds, scales, quantile_levels, tile_cells, time_chunk
    )
    wet, wet_rule = wet_threshold(wet_mm, interval_minutes)
    members = ensemble.shape[0]
    T, Y, X = truth.shape
    tile_edges = tile_edge_pairs((Y, X), s, *tiles[:2]) if tiles is not None else None
    # members carry the mean's tile edges and the denoiser's (hpcsr.sampling.ensemble)
    member_edges = tile_edges
    if tiles is not None and len(tiles) > 2 and tiles[2] != tiles[1]:
        member_edges = union_edges(tile_edges, tile_edge_pairs((Y, X), s, tiles[0], tiles[2]))
    chunk = time_chunk or max(1, CHUNK_VALUES // (members * Y * X))
    chunk = min(max(t, chunk // t * t), T)
    warn = []
    if members < MIN_MEMBERS_FOR_CRPS:
        warn.append(
            f"{members} members < {MIN_MEMBERS_FOR_CRPS}: fair CRPS, spread-skill and rank histogram are noisy; "
            "results flagged 'fewer_than_10_members'"
        )
    lr_source = "given"
    if lr is None:
        lr, lr_source = perfect_model_lr(truth, s, t, chunk), "perfect model: coarsen(truth, s, t)"
    lr = np.asarray(lr, dtype=np.float32)
    lowest = min(min(quantile_levels), min(QQ_LEVELS))
    forecast_members = {"ensemble": members, **{b: 1 for b in baselines}}
    scores = {
        name: _ForecastScores(
            m,
            T * Y * X,
            thresholds,
            scales,
            lowest,
            s,
            t,
            tile_cells,
            FieldStructure((Y, X), wet),
            member_edges if name == "ensemble" else tile_edges,
        )
        for name, m in forecast_members.items()
    }
    truth_structure = FieldStructure((Y, X), wet)
    spectra_ok = min(Y, X) >= 4
    if not spectra_ok:
        warn.append(f"grid {Y} x {X} is below 4 x 4: no power spectra")
    spectrum_sums = {name: 0.0 for name in ["truth", *forecast_members]}
    spectrum_frames, masked_fraction, wavenumber = 0, 0.0, None
    step_totals = np.full(T, -np.inf)
    rng = np.random.default_rng(seed)
    starts = range(0, T, chunk)
    for a in tqdm(starts, desc=f"evaluate {pair.name}", unit="chunk", disable=not progress or len(starts) < 2):
        b = min(a + chunk, T)
        y = np.asarray(truth[a:b], dtype=np.float32)
        lr_chunk = lr[a // t : b // t]
        fields = {"ensemble": np.asarray(ensemble[:, a:b], dtype=np.float32)}
        for name in baselines:
            if name in bl.FROM_LR:
                fields[name] = bl.from_lr(name, lr, s, t, a, b)[None]
            else:
                fields[name] = bl.mean_only(np.asarray(mean[a:b], dtype=np.float32), y.shape)[None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames
            step_totals[a:b] = np.where(np.isfinite(y).any(axis=(1, 2)), np.nansum(y, axis=(1, 2)), -np.inf)
        scored = np.isfinite(y)
        for x in fields.values():
            scored &= np.isfinite(x).all(axis=0)
        truth_structure.add(y[None], scored)
        for name, x in fields.items():
            scores[name].update(y, x, lr_chunk, rng, scored)
        if spectra_ok:
            missing = ~np.isfinite(y)
            for x in fields.values():
                missing |= ~np.isfinite(x).all(axis=0)
            usable = ~missing.all(axis=(1, 2))
            if usable.any():
                masked_fraction += float(missing[usable].mean(axis=(1, 2)).sum())
                spectrum_frames += int(usable.sum())
                wavenumber, p = radial_power_spectrum(np.where(missing, 0.0, y)[usable], spectrum_window)
                spectrum_sums["truth"] = spectrum_sums["truth"] + p.sum(axis=0)
                for name, x in fields.items():
                    _, p = radial_power_spectrum(np.where(missing, 0.0, x)[:, usable], spectrum_window)
                    spectrum_sums[name] = spectrum_sums[name] + p.mean(axis=0).sum(axis=0)
    forecasts = {name: sc.result(quantile_levels) for name, sc in scores.items()}
    truth_scores = truth_structure.scores(s, tile_edges)
    truth_wet = truth_scores["wet_fraction"]
    for res in forecasts.values():
        res["wet_fraction_ratio"] = res["wet_fraction"] / truth_wet if truth_wet > 0 else float("nan")
    spectra = None
    if spectrum_frames:
        spectra = {
            "k_cycles_per_pixel": wavenumber.tolist(),
            "window": spectrum_window,
            "frames": spectrum_frames,
            "masked_fraction": masked_fraction / spectrum_frames,
            "power": {name: (v / spectrum_frames).tolist() for name, v in spectrum_sums.items()},
        }
        for name in forecasts:
            forecasts[name]["lsd_db"] = log_spectral_distance(spectra["power"]["truth"], spectra["power"][name])
            forecasts[name]["spectral_ratio"] = spectral_ratio(
                wavenumber, spectra["power"]["truth"], spectra["power"][name], s
            )
    else:
        warn.append("no frame had valid data for a power spectrum")
    for message in warn:
        warnings.warn(message, UserWarning, stacklevel=2)
        log.warning(message)
    truth_valid = forecasts["ensemble"]["n_truth_valid"]
    return {
        "pair": {"s": s, "t": t, "name": pair.name},
        "members": members,
        "shape": {"time": T, "y": Y, "x": X},
        "lr_source": lr_source,
        "counts": {
            "truth_values": T * Y * X,
            "truth_missing": T * Y * X - truth_valid,
            "lr_values": int(lr.size),
            "lr_missing": int(np.isnan(lr).sum()),
        },
        "settings": {
            "thresholds_mm_per_step": list(thresholds),
            "fss_scales_px": list(scales),
            "quantile_levels": list(quantile_levels),
            "tile_cells": tile_cells,
            "seed": seed,
            "time_chunk": chunk,
            "pixel_size_km": pixel_size_km,
            "wet_mm_per_step": wet,
            "wet_rule": wet_rule,
            "spectral_band_px": [2, s],
            "sampling_tiles": None if tiles is None else _tiles_record(tiles),
            "baseline_timing": "LR block mean placed at its block centre j*t+(t-1)/2; HR step i at i",
        },
        "showcase_step": int(np.argmax(step_totals)),
        "warnings": warn,
        "truth": truth_scores,
        "forecasts": forecasts,
        "undefined": _undefined(s, forecasts, spectra, tiles, tile_edges),
        "spectra": spectra,
    }
