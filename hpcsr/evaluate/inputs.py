"""Reading the evaluation's inputs from CF netCDF files and lining them up.

Files: truth `precip(time, y, x)`, ensemble `precip` with dims member, time, y, x in any order
(`hpcsr.sample` writes (time, member, y, x); it is read as (member, time, y, x); an optional
`precip_mean(time, y, x)` in the same file is the mean network's prediction), LR
`precip(time, y, x)` with one step per LR block, time-stamped at the end of its block (the last HR
step's time), like the shards. Values in mm per HR step, NaN missing. Variables stay lazy
(xarray), so `evaluate` reads them chunk by chunk.

When the files carry coordinates, the truth, LR and mean are selected at the ensemble's times and
cells (truth and ensemble may cover different periods or domains); without coordinates the shapes
must already match. The factor pair comes from the caller, else the ensemble's `factor_pair`
attribute ('s10_t3'), else from the LR grid and time step relative to the ensemble's. The HR step
length (for the wet threshold) is the ensemble's `interval_minutes` attribute, else its time spacing;
the sampler's tiling (for the tile seam ratio) its `tile` and `overlap` attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from hpcsr.factors import FactorPair

MEAN_VARIABLE = "precip_mean"


@dataclass
class Inputs:
    """Aligned, lazy inputs of one evaluation."""

    truth: xr.DataArray  # (time, y, x)
    ensemble: xr.DataArray  # (member, time, y, x)
    lr: xr.DataArray | None  # (time/t, y/s, x/s), None: perfect model
    mean: xr.DataArray | None  # (time, y, x), None: no mean-network baseline
    s: int
    t: int
    pixel_size_km: float | None
    interval_minutes: float | None  # HR step length, None: unknown
    attrs: dict = field(default_factory=dict)  # the ensemble file's global attributes
    sources: dict = field(default_factory=dict)  # what was read from where, for the report


def _open(path, variable: str, dims: tuple[str, ...], role: str) -> tuple[xr.DataArray, dict]:
    try:
        ds = xr.open_dataset(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot open {role} file {path}: {err}") from err
    if variable not in ds.data_vars:
        raise ValueError(
            f"{role} file {path} has no variable {variable!r} (it has {sorted(ds.data_vars)}): "
            "pass the right name with --variable"
        )
    da = ds[variable]
    if set(da.dims) != set(dims):
        raise ValueError(f"{role} variable {variable!r} in {path} has dims {da.dims}, expected {dims}")
    return da.transpose(*dims), dict(ds.attrs)


def _spacing(da: xr.DataArray, dim: str):
    if dim not in da.coords or da.sizes[dim] < 2:
        return None
    values = da[dim].values
    return np.abs(values[1] - values[0])


def _ratio(big, small, what: str) -> int:
    ratio = float(big / small)
    if round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-6 * ratio:
        raise ValueError(f"the LR {what} is {ratio:g} times the HR {what}, not a whole factor: pass --s and --t")
    return int(round(ratio))


def resolve_pair(
    ensemble: xr.DataArray, attrs: dict, lr: xr.DataArray | None, s: int | None, t: int | None
) -> FactorPair:
    """The factor pair: given, else the `factor_pair` attribute, else inferred from the LR file."""
    if s is not None and t is not None:
        return FactorPair(int(s), int(t))
    if "factor_pair" in attrs:
        pair = FactorPair.parse(attrs["factor_pair"])
        return FactorPair(s or pair.s, t or pair.t)
    if lr is None:
        raise ValueError(
            "no factor pair: pass --s and --t, give --lr, or write a 'factor_pair' attribute in the ensemble file"
        )
    dx_hr, dx_lr = _spacing(ensemble, "x"), _spacing(lr, "x")
    dt_hr, dt_lr = _spacing(ensemble, "time"), _spacing(lr, "time")
    if s is None:
        s = _ratio(dx_lr, dx_hr, "pixel") if dx_hr and dx_lr else _ratio(ensemble.sizes["x"], lr.sizes["x"], "width")
    if t is None:
        t = (
            _ratio(dt_lr, dt_hr, "time step")
            if dt_hr and dt_lr
            else _ratio(ensemble.sizes["time"], lr.sizes["time"], "length")
        )
    return FactorPair(int(s), int(t))


def _select(da: xr.DataArray, dim: str, wanted: np.ndarray, tolerance, role: str) -> xr.DataArray:
    """`da` at the `wanted` coordinate values of `dim` (nearest within `tolerance`, exact if None)."""
    index = da.indexes[dim]
    if tolerance is None:
        position = index.get_indexer(wanted)
    else:
        position = index.get_indexer(wanted, method="nearest", tolerance=tolerance)
    if (position < 0).any():
        missing = np.asarray(wanted)[position < 0]
        raise ValueError(
            f"{role} lacks {len(missing)} of the {dim} values needed, first {missing[0]}: "
            f"it must cover every {dim} of the ensemble"
        )
    return da.isel({dim: position})


def align_like(da: xr.DataArray, ensemble: xr.DataArray, role: str) -> xr.DataArray:
    """`da` (time, y, x) at the ensemble's times and cells (by coordinates where both have them)."""
    for dim in ("time", "y", "x"):
        if dim in da.coords and dim in ensemble.coords:
            step = _spacing(ensemble, dim)
            tolerance = None if dim == "time" or step is None else step / 2
            da = _select(da, dim, ensemble[dim].values, tolerance, role)
        elif da.sizes[dim] != ensemble.sizes[dim]:
            raise ValueError(
                f"{role} has {da.sizes[dim]} {dim} values, the ensemble {ensemble.sizes[dim]}, and no "
                f"{dim} coordinates to line them up: give files over the same {dim} range"
            )
    return da


def align_lr(lr: xr.DataArray, ensemble: xr.DataArray, s: int, t: int) -> xr.DataArray:
    """LR blocks under the ensemble: LR time = end of block, LR cell centre = mean of its HR centres."""
    T, Y, X = (ensemble.sizes[d] for d in ("time", "y", "x"))
    if T % t or Y % s or X % s:
        raise ValueError(
            f"ensemble of {T} steps x {Y} x {X} is not whole blocks of (s={s}, t={t}): "
            f"trim to {T - T % t} steps and {Y - Y % s} x {X - X % s} pixels"
        )
    wanted = {
        "time": ensemble["time"].values[t - 1 :: t] if "time" in ensemble.coords else None,
        "y": ensemble["y"].values.reshape(-1, s).mean(axis=1) if "y" in ensemble.coords else None,
        "x": ensemble["x"].values.reshape(-1, s).mean(axis=1) if "x" in ensemble.coords else None,
    }
    sizes = {"time": T // t, "y": Y // s, "x": X // s}
    for dim in ("time", "y", "x"):
        if dim in lr.coords and wanted[dim] is not None:
            step = _spacing(ensemble, dim)
            tolerance = None if dim == "time" else (step * s / 2 if step else None)
            role = (
                "LR (time stamps = end of each block; the ensemble must start at a block's first step)"
                if dim == "time"
                else "LR"
            )
            lr = _select(lr, dim, wanted[dim], tolerance, role)
        elif lr.sizes[dim] != sizes[dim]:
            raise ValueError(
                f"LR has {lr.sizes[dim]} {dim} values but (s={s}, t={t}) over the ensemble needs "
                f"{sizes[dim]}, and there are no coordinates to select with"
            )
    return lr


def pixel_size_km(ensemble: xr.DataArray, attrs: dict) -> float | None:
    """HR pixel side in km from the x coordinate (units m or km) or the file's pixel_size_x attribute."""
    factors = {"m": 1e-3, "metre": 1e-3, "meter": 1e-3, "metres": 1e-3, "meters": 1e-3, "km": 1.0}
    step = _spacing(ensemble, "x")
    units = ensemble["x"].attrs.get("units") if "x" in ensemble.coords else None
    if step and units in factors:
        return float(step * factors[units])
    if "pixel_size_x" in attrs and attrs.get("pixel_size_units") in factors:
        return float(attrs["pixel_size_x"]) * factors[attrs["pixel_size_units"]]
    return None


def interval_minutes(ensemble: xr.DataArray, attrs: dict) -> float | None:
    """HR step in minutes: the file's or the variable's interval_minutes attribute, else the spacing
    of a datetime time coordinate; None when neither says."""
    for source in (attrs, ensemble.attrs):
        if "interval_minutes" in source:
            return float(source["interval_minutes"])
    step = _spacing(ensemble, "time")
    if isinstance(step, np.timedelta64):
        return float(step / np.timedelta64(1, "m"))
    return None


def sampling_tiles(attrs: dict) -> tuple[int, ...] | None:
    """(tile side, overlap[, the denoiser's overlap]) in HR pixels of the sampler's tiling, from the
    attributes `hpcsr sample` writes (tile, overlap, residual_overlap; ensembles sampled before
    s46 have no residual_overlap: their denoiser used the mean's tiles); None for an ensemble that
    does not record them."""
    if "tile" in attrs and "overlap" in attrs:
        tiles = (int(attrs["tile"]), int(attrs["overlap"]))
        return tiles + (int(attrs["residual_overlap"]),) if "residual_overlap" in attrs else tiles
    return None


def load_inputs(
    truth_path,
    ensemble_path,
    lr_path=None,
    mean_path=None,
    s: int | None = None,
    t: int | None = None,
    variable: str = "precip",
    mean_variable: str = MEAN_VARIABLE,
) -> Inputs:
    """Open and line up the evaluation's files (lazily); see the module docstring for the layout."""
    ensemble, attrs = _open(ensemble_path, variable, ("member", "time", "y", "x"), "ensemble")
    truth, _ = _open(truth_path, variable, ("time", "y", "x"), "truth")
    lr = _open(lr_path, variable, ("time", "y", "x"), "LR")[0] if lr_path else None
    pair = resolve_pair(ensemble, attrs, lr, s, t)
    truth = align_like(truth, ensemble, "truth")
    if lr is not None:
        lr = align_lr(lr, ensemble, pair.s, pair.t)
    sources = {
        "truth": str(truth_path),
        "ensemble": str(ensemble_path),
        "LR": str(lr_path) if lr_path else "coarsened truth",
    }
    mean = None
    if mean_path:
        mean = align_like(_open(mean_path, mean_variable, ("time", "y", "x"), "mean")[0], ensemble, "mean")
        sources["mean"] = f"{mean_path}:{mean_variable}"
    else:
        with xr.open_dataset(ensemble_path) as ds:
            has_mean = mean_variable in ds.data_vars
        if has_mean:
            mean = align_like(_open(ensemble_path, mean_variable, ("time", "y", "x"), "mean")[0], ensemble, "mean")
            sources["mean"] = f"{ensemble_path}:{mean_variable}"
    return Inputs(
        truth,
        ensemble,
        lr,
        mean,
        pair.s,
        pair.t,
        pixel_size_km(ensemble, attrs),
        interval_minutes(ensemble, attrs),
        attrs,
        sources,
    )
