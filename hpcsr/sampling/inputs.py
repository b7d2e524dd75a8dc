"""The LR sequence to super-resolve, from any of three inputs, on one convention:

LR values are mm per HR step (the mean over an s x s x t block, as `hpcsr.coarsen.coarsen` and the
shards make them), NaN = missing; each LR block is time-stamped at the END of its last HR step.

- LR netCDF `precip(time, y, x)` with x/y the LR cell centres and a CF grid mapping. Its
  `interval_minutes` attribute is the HR step (as in the shards); without it the HR step is the
  smallest time spacing divided by t (or pass `hr_step_minutes`).
- LR shard (`hpcsr-preprocess` output, `shards/s{s}_t{t}.h5`): grid from its `lr_transform`, CRS
  from its attributes.
- HR, coarsened on the fly (perfect-model test): an HR netCDF `precip(time, y, x)` or an HR store
  (`hr.h5`). A grid not divisible by s is cropped at the bottom/right (logged, as preprocessing
  does). Time blocks of t HR steps start at a fixed phase (`phase_minutes` after 00 UTC, default 0,
  as the shards); an HR step missing from the file makes its block's LR NaN (coarsen with every
  value required), a block with no HR step at all is absent.

Everything is read lazily, block by block (`LRSequence.read`), so inputs larger than memory work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import xarray as xr

from hpcsr.coarsen import coarsen
from hpcsr.data.store import HR_FORMAT, SHARD_FORMAT, HRStore, Shard, store_units
from hpcsr.factors import FactorPair

log = logging.getLogger(__name__)

VARIABLE = "precip"
COORD_KEYS = ("units", "standard_name", "long_name", "axis")  # coordinate attributes carried to the output


@dataclass
class LRSequence:
    """LR blocks of one factor pair, their times, and the HR grid they super-resolve onto."""

    read: Callable[[np.ndarray], np.ndarray]  # positions into `times` (sorted) -> (k, ny, nx) float32 mm
    times: np.ndarray  # (N,) int64 seconds, end of each available LR block, strictly increasing
    hr_step_s: int  # seconds per HR step
    pair: FactorPair
    shape: tuple[int, int]  # (ny, nx) LR cells
    x_hr: np.ndarray  # (nx * s,) HR cell centres
    y_hr: np.ndarray  # (ny * s,)
    x_attrs: dict = field(default_factory=dict)
    y_attrs: dict = field(default_factory=dict)
    crs: dict = field(default_factory=dict)  # attributes of the CF grid mapping variable
    source: dict = field(default_factory=dict)  # kind, path and notes, recorded in the output

    @property
    def block_s(self) -> int:
        return self.hr_step_s * self.pair.t


def _seconds(values, path) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.datetime64):
        raise ValueError(
            f"{path}: time values of type {values.dtype} (a model calendar such as noleap or 360_day, or no time "
            "units): radar input needs the standard, gregorian or proleptic_gregorian calendar"
        )
    return values.astype("datetime64[s]").astype(np.int64)


def _check_times(times: np.ndarray, path) -> None:
    if len(times) == 0:
        raise ValueError(f"{path} has no time steps")
    if len(times) > 1 and not (np.diff(times) > 0).all():
        raise ValueError(f"times in {path} are not strictly increasing: sort the file by time and drop duplicates")


def _step_minutes(value, what: str) -> int:
    minutes = float(value)
    if not minutes > 0 or abs(minutes - round(minutes)) > 1e-9:
        raise ValueError(f"{what}={value} must be a positive whole number of minutes")
    return int(round(minutes))


def _hr_step_seconds(ds: xr.Dataset, da: xr.DataArray, times: np.ndarray, per: int, path, hr_step_minutes) -> int:
    """The HR step in seconds: --hr-step-minutes, else the file's interval_minutes, else the
    smallest time spacing divided by `per` (the frames per time step of the file)."""
    if hr_step_minutes is not None:
        return 60 * _step_minutes(hr_step_minutes, "--hr-step-minutes")
    interval = da.attrs.get("interval_minutes", ds.attrs.get("interval_minutes"))
    if interval is not None:
        return 60 * _step_minutes(interval, f"interval_minutes of {path}")
    if len(times) < 2:
        raise ValueError(
            f"{path} has a single time step and no interval_minutes attribute: pass --hr-step-minutes MINUTES"
        )
    spacing = int(np.diff(times).min())
    if spacing % per:
        raise ValueError(
            f"{path}: time spacing {spacing} s is not divisible by t={per}: pass --hr-step-minutes MINUTES"
        )
    log.info(
        "%s: no interval_minutes attribute; HR step inferred as %d min from the time spacing",
        path,
        spacing // per // 60,
    )
    return spacing // per


def _grid_mapping(ds: xr.Dataset, da: xr.DataArray) -> dict:
    name = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
    for candidate in ([name] if name else []) + ["crs", "spatial_ref"]:
        if candidate in ds.variables:
            return {"name": "crs", **{k: v for k, v in ds[candidate].attrs.items()}}
    return {}


def _coord_attrs(da: xr.DataArray, dim: str) -> dict:
    if dim not in da.coords:
        return {}
    return {k: v for k, v in da[dim].attrs.items() if k in COORD_KEYS}


def _open_precip(path) -> tuple[xr.Dataset, xr.DataArray]:
    try:
        ds = xr.open_dataset(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot open {path} as netCDF: {err}") from err
    if VARIABLE not in ds.data_vars:
        raise ValueError(
            f"{path} has no variable {VARIABLE!r} (it has {sorted(ds.data_vars)}): "
            "give a CF netCDF with precip(time, y, x) in mm"
        )
    da = ds[VARIABLE]
    if set(da.dims) != {"time", "y", "x"}:
        raise ValueError(f"{path}: {VARIABLE} has dims {da.dims}, expected (time, y, x)")
    if "time" not in da.coords:
        raise ValueError(f"{path}: {VARIABLE} has no time coordinate: add the end time of each step")
    return ds, da.transpose("time", "y", "x")


def _hr_centres_from_lr(centres: np.ndarray, s: int, spacing: float | None, path, dim: str) -> np.ndarray:
    """HR cell centres of the s sub-cells of every LR cell centre (spacing signed, LR units)."""
    if len(centres) > 1:
        steps = np.diff(centres)
        spacing = float(np.median(steps))
        if not np.allclose(steps, spacing, rtol=1e-6, atol=1e-9 * abs(spacing)):
            raise ValueError(f"{path}: the {dim} coordinate is not evenly spaced: give a regular grid")
    if spacing is None:
        raise ValueError(f"{path} has a single {dim} cell and no pixel_size_{dim} attribute: the HR grid is unknown")
    offsets = (np.arange(s) + 0.5 - s / 2) * spacing / s
    return (centres[:, None] + offsets[None, :]).reshape(-1)


def _is_hpcsr_file(path, fmt: str) -> bool:
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("format", b"")
    except OSError:
        return False
    return (value.decode() if isinstance(value, bytes) else str(value)) == fmt


def open_lr_netcdf(path, pair: FactorPair, hr_step_minutes: int | None = None) -> LRSequence:
    """An LR netCDF (see the module docstring)."""
    ds, da = _open_precip(path)
    declared = ds.attrs.get("factor_pair")
    if declared is not None and FactorPair.parse(declared) != pair:
        raise ValueError(
            f"{path} declares factor pair {FactorPair.parse(declared).name} but the export is "
            f"{pair.name}: use an export of {FactorPair.parse(declared).name} or the matching LR file"
        )
    times = _seconds(da["time"].values, path)
    _check_times(times, path)
    step = _hr_step_seconds(ds, da, times, pair.t, path, hr_step_minutes)
    coords = {}
    for dim in ("y", "x"):
        if dim not in da.coords:
            raise ValueError(
                f"{path}: {VARIABLE} has no {dim} coordinate (LR cell centres): add it so the HR grid can be placed"
            )
        # a single-cell axis takes its spacing from pixel_size_x / pixel_size_y (LR cell side; y north-up: rows go south)
        size = ds.attrs.get(f"pixel_size_{dim}")
        spacing = None if size is None else float(size) * (-1 if dim == "y" else 1)
        coords[dim] = _hr_centres_from_lr(np.asarray(da[dim].values, np.float64), pair.s, spacing, path, dim)
    values = da.variable

    def read(positions):
        return np.asarray(values[np.asarray(positions)].values, dtype=np.float32)

    return LRSequence(
        read,
        times,
        step,
        pair,
        (da.sizes["y"], da.sizes["x"]),
        coords["x"],
        coords["y"],
        _coord_attrs(da, "x"),
        _coord_attrs(da, "y"),
        _grid_mapping(ds, da),
        {"kind": "lr-netcdf", "path": str(path)},
    )


def open_shard(path, pair: FactorPair) -> LRSequence:
    """The LR blocks of a shard written by `hpcsr-preprocess`."""
    shard = Shard(path)
    if shard.pair != pair:
        raise ValueError(
            f"shard {path} holds factor pair {shard.pair.name} but the export is {pair.name}: "
            f"give the shard shards/{pair.name}.h5 or an export trained for {shard.pair.name}"
        )
    times = np.asarray(shard.time_s, np.int64)
    _check_times(times, path)
    x0, dx, _, y0, _, dy = shard.lr_transform
    ny, nx = shard.lr.shape[1:]
    s = pair.s
    x_hr = x0 + (np.arange(nx * s) + 0.5) * dx / s
    y_hr = y0 + (np.arange(ny * s) + 0.5) * dy / s
    x_attrs, y_attrs = _projection_attrs(store_units(shard.hr_store_path))

    def read(positions):
        return np.asarray(shard.lr[np.asarray(positions)], dtype=np.float32)

    return LRSequence(
        read,
        times,
        60 * shard.interval_minutes,
        pair,
        (ny, nx),
        x_hr,
        y_hr,
        x_attrs,
        y_attrs,
        {"name": "crs", "crs_wkt": shard.crs_wkt, "spatial_ref": shard.crs_wkt, "proj4": shard.crs_proj4},
        {"kind": "lr-shard", "path": str(path)},
    )


def _projection_attrs(units: tuple[str, str]) -> tuple[dict, dict]:
    return (
        {"units": units[0], "standard_name": "projection_x_coordinate", "axis": "X"},
        {"units": units[1], "standard_name": "projection_y_coordinate", "axis": "Y"},
    )


@dataclass
class _HRSource:
    """HR frames of a netCDF or an HR store: times (int64 s), step, grid, and a frame reader."""

    times: np.ndarray
    step_s: int
    x: np.ndarray
    y: np.ndarray
    x_attrs: dict
    y_attrs: dict
    crs: dict
    read: Callable[[int, int], np.ndarray]  # (i0, i1) frames, full grid, float32 mm
    kind: str


def _hr_netcdf(path, hr_step_minutes) -> _HRSource:
    ds, da = _open_precip(path)
    times = _seconds(da["time"].values, path)
    _check_times(times, path)
    step = _hr_step_seconds(ds, da, times, 1, path, hr_step_minutes)
    coords = {}
    for dim in ("y", "x"):
        if dim in da.coords:
            coords[dim] = np.asarray(da[dim].values, np.float64)
        else:
            log.warning("%s has no %s coordinate: the output uses cell indices", path, dim)
            coords[dim] = np.arange(da.sizes[dim], dtype=np.float64)
    values = da.variable
    return _HRSource(
        times,
        step,
        coords["x"],
        coords["y"],
        _coord_attrs(da, "x"),
        _coord_attrs(da, "y"),
        _grid_mapping(ds, da),
        lambda i0, i1: np.asarray(values[i0:i1].values, np.float32),
        "hr-netcdf",
    )


def _hr_store(path, hr_step_minutes) -> _HRSource:
    store = HRStore(path)
    step = 60 * (
        _step_minutes(hr_step_minutes, "--hr-step-minutes") if hr_step_minutes is not None else store.interval_minutes
    )
    x_attrs, y_attrs = _projection_attrs(store_units(path))
    return _HRSource(
        np.asarray(store.time_s, np.int64),
        step,
        np.asarray(store.x, np.float64),
        np.asarray(store.y, np.float64),
        x_attrs,
        y_attrs,
        {"name": "crs", "crs_wkt": store.crs_wkt, "spatial_ref": store.crs_wkt, "proj4": store.crs_proj4},
        lambda i0, i1: store.read(i0, i1),
        "hr-store",
    )


def open_hr_coarsened(path, pair: FactorPair, hr_step_minutes: int | None = None, phase_minutes: int = 0) -> LRSequence:
    """LR blocks made from HR frames on the fly (perfect-model input; see the module docstring)."""
    src = _hr_store(path, hr_step_minutes) if _is_hpcsr_file(path, HR_FORMAT) else _hr_netcdf(path, hr_step_minutes)
    s, t = pair.s, pair.t
    notes = []
    Y, X = len(src.y), len(src.x)
    Yc, Xc = Y - Y % s, X - X % s
    if Yc == 0 or Xc == 0:
        raise ValueError(f"{path}: HR grid {Y} x {X} is smaller than one LR cell of s={s}: give a larger domain")
    if (Yc, Xc) != (Y, X):
        note = (
            f"HR grid {Y} x {X} is not divisible by s={s}: cropped to {Yc} x {Xc} (bottom rows / right columns dropped)"
        )
        log.warning("%s: %s", path, note)
        notes.append(note)
    step = src.step_s
    block = step * t
    phase = 60 * phase_minutes
    if len(src.times) > 1 and np.any((src.times - src.times[0]) % step):
        raise ValueError(
            f"{path}: time steps are not multiples of the {step // 60} min HR step: check interval_minutes"
        )
    # block k covers the HR steps ending at end_k - (t-1)*step .. end_k, with (end_k - t*step - phase) % block == 0
    first_start = src.times[0] - step
    k0 = -((phase - first_start) // block)  # first block starting at or after first_start
    first_end = phase + k0 * block + block
    ends = np.arange(first_end, src.times[-1] + 1, block, dtype=np.int64)
    index = {int(v): i for i, v in enumerate(src.times)}
    present = [[index.get(int(e - (t - 1 - j) * step)) for j in range(t)] for e in ends]
    keep = [any(i is not None for i in frames) for frames in present]
    dropped = len(src.times) - sum(sum(i is not None for i in frames) for frames in present)
    if dropped:
        note = f"{dropped} HR steps outside whole {t}-step blocks (phase {phase_minutes} min) were not used"
        log.info("%s: %s", path, note)
        notes.append(note)
    ends = ends[np.asarray(keep, bool)]
    present = [p for p, k in zip(present, keep) if k]
    if len(ends) == 0:
        raise ValueError(
            f"{path}: no whole block of t={t} HR steps (phase {phase_minutes} min): give a longer sequence"
        )
    incomplete = sum(any(i is None for i in frames) for frames in present)
    if incomplete:
        note = f"{incomplete} blocks lack some HR steps: their LR is NaN (missing)"
        log.warning("%s: %s", path, note)
        notes.append(note)

    def read(positions):
        out = np.empty((len(positions), Yc // s, Xc // s), np.float32)
        for n, pos in enumerate(np.asarray(positions)):
            frames = present[int(pos)]
            hr = np.full((t, Yc, Xc), np.nan, np.float32)
            if all(i is not None for i in frames) and frames[-1] - frames[0] == t - 1:
                hr[:] = src.read(frames[0], frames[-1] + 1)[:, :Yc, :Xc]
            else:
                for j, i in enumerate(frames):
                    if i is not None:
                        hr[j] = src.read(i, i + 1)[0, :Yc, :Xc]
            out[n] = coarsen(hr, s, t)[0]
        return out

    return LRSequence(
        read,
        ends,
        step,
        pair,
        (Yc // s, Xc // s),
        src.x[:Xc],
        src.y[:Yc],
        src.x_attrs,
        src.y_attrs,
        src.crs,
        {"kind": f"{src.kind}-coarsened", "path": str(path), "notes": notes, "phase_minutes": phase_minutes},
    )


def open_lr(path, pair: FactorPair, hr_step_minutes: int | None = None) -> LRSequence:
    """An LR input: a shard (hpcsr HDF5) or an LR netCDF."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"LR input {path} does not exist: give an LR netCDF precip(time, y, x) or a shard s{{s}}_t{{t}}.h5"
        )
    if _is_hpcsr_file(path, SHARD_FORMAT):
        return open_shard(path, pair)
    return open_lr_netcdf(path, pair, hr_step_minutes)


def open_hr(path, pair: FactorPair, hr_step_minutes: int | None = None, phase_minutes: int = 0) -> LRSequence:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"HR input {path} does not exist: give an HR netCDF precip(time, y, x) or an HR store hr.h5"
        )
    return open_hr_coarsened(path, pair, hr_step_minutes, phase_minutes)
