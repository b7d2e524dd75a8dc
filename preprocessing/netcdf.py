"""Generic CF netCDF reader: `precip(time, y, x)` in mm accumulated over `interval_minutes` ending at
`time`, 1-D regular `x`/`y` cell centres and a grid-mapping variable with `crs_wkt`/`spatial_ref`/
`proj4` (the format of `../shared/data/*.nc`). Packed values (int16 with scale_factor/add_offset, as
`cdo -b I16` writes) are unpacked and their fill masked; time may be in seconds .. days since any
date, in the standard, gregorian or proleptic_gregorian calendar.

Sub-hourly (or any finer) steps can be aggregated to a coarser base cadence: the output step ending
at E is the sum of the k = cadence / interval source steps ending in (E - cadence, E], and is NaN
wherever any of them is NaN. Output steps end on multiples of the cadence since the epoch; an
output step with some of its source steps absent from the file is not produced (recorded), and a
source step off the file's own step grid is left out (recorded, with a warning).
Values are checked (negative, above the plausibility cap) on the source steps, before summing; with
`dequantise_mm` q > 0 each source step is then smoothed inside its rounding bins
(`preprocessing.dequantise`), for a product that rounds its amounts to multiples of q.

A finer grid can be aggregated to a coarser one (`pixels` = k): each output pixel is the mean of a
k x k block of source pixels (mm per step is an amount per unit area, so the mean keeps the mass;
`hpcsr.coarsen`), NaN where any of them is NaN; rows and columns past the last whole block are
dropped (with a warning). Training and evaluation data then share one pixel size, e.g. a 500 m
radar aggregated to the 1 km of Comephore.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import netCDF4
import numpy as np

from hpcsr.coarsen import coarsen
from preprocessing.dequantise import dequantise
from preprocessing.geotiff import Grid
from preprocessing.quality import FrameQC, cap_amount, clean_mm

log = logging.getLogger(__name__)

PRECIP = "precip"
_TIME_UNITS = re.compile(r"\s*(seconds|second|minutes|minute|hours|hour|days|day)\s+since\s+(\S+)(?:[ T](\S+))?\s*$")
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
REAL_CALENDARS = ("standard", "gregorian", "proleptic_gregorian")  # the same for dates after 1582


def _time_seconds(values: np.ndarray, units: str, path: str) -> np.ndarray:
    m = _TIME_UNITS.match(units or "")
    if not m:
        raise ValueError(f"{path}: time units {units!r} not understood: expected '<minutes|hours|...> since <date>'")
    unit, day, clock = m.groups()
    try:  # CF allows unpadded fields ('1970-1-1 0:0:0', as CDO writes them)
        year, month, date = (int(v) for v in day.split("-"))
        hms = [float(v) for v in (clock or "0").rstrip("Z").split(":")] + [0.0, 0.0]
    except ValueError:
        raise ValueError(f"{path}: reference date of time units {units!r} not understood") from None
    ref = np.datetime64(f"{year:04d}-{month:02d}-{date:02d}", "s").astype(np.int64) + round(
        3600 * hms[0] + 60 * hms[1] + hms[2]
    )
    seconds = np.asarray(values, dtype=np.float64) * _UNIT_SECONDS[unit.rstrip("s")] + ref
    rounded = np.rint(seconds).astype(np.int64)
    if np.any(np.abs(seconds - rounded) > 1e-3):
        raise ValueError(f"{path}: time values are not whole seconds")
    return rounded


def _regular(coord: np.ndarray, name: str, path: str) -> float:
    if coord.ndim != 1 or coord.size < 2:
        raise ValueError(f"{path}: coordinate {name} must be 1-D with >= 2 values")
    step = np.diff(coord)
    if not np.allclose(step, step[0], rtol=1e-6, atol=1e-9 * max(1.0, abs(step[0]))):
        raise ValueError(
            f"{path}: coordinate {name} is not regularly spaced (steps {step.min()}..{step.max()}): regrid it first"
        )
    return float((coord[-1] - coord[0]) / (coord.size - 1))


@dataclass(frozen=True)
class NetcdfPlan:
    """What one file contributes: its grid and, per output step, the source indices to sum."""

    path: str
    grid: Grid
    interval_minutes: int  # of the source steps
    out_times: np.ndarray  # (M,) int64 seconds, end of each output step
    sources: np.ndarray  # (M, k) int64 source time indices summed into each output step
    x_units: str
    y_units: str
    pixels: int = 1  # source pixels per output pixel along each axis (k x k block means)


def _open(path) -> netCDF4.Dataset:
    """The file opened with netCDF4; a file it cannot read is the user's input error (ValueError)."""
    try:
        return netCDF4.Dataset(path)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ValueError(
            f"{path} cannot be read as netCDF ({err}): the file is damaged, cut short or not netCDF"
        ) from None


def aggregated_grid(grid: Grid, pixels: int, path: str) -> Grid:
    """The grid of `pixels` x `pixels` block means of `grid` (same upper-left corner)."""
    if pixels < 1:
        raise ValueError(f"aggregate_pixels={pixels} must be >= 1")
    if pixels > min(grid.width, grid.height):
        raise ValueError(f"{path}: aggregate_pixels={pixels} is larger than its grid of {grid.height} x {grid.width}")
    if pixels == 1:
        return grid
    if grid.width % pixels or grid.height % pixels:
        log.warning(
            "%s: %d x %d pixels do not divide into %d x %d blocks: the last %d row(s) and %d column(s) are dropped",
            path,
            grid.height,
            grid.width,
            pixels,
            pixels,
            grid.height % pixels,
            grid.width % pixels,
        )
    return Grid(
        grid.width // pixels,
        grid.height // pixels,
        grid.x0,
        grid.y0,
        grid.dx * pixels,
        grid.dy * pixels,
        grid.crs_proj4,
        grid.crs_wkt,
    )


def plan_file(
    path: str, cadence_minutes: int, interval_minutes: int | None = None, pixels: int = 1
) -> tuple[NetcdfPlan, list[dict]]:
    """Read the axes of one file and decide its output steps and grid (`pixels` x `pixels` source
    pixels per output pixel); returns (plan, skipped records)."""
    with _open(path) as ds:
        if PRECIP not in ds.variables:
            raise ValueError(
                f"{path} has no variable '{PRECIP}' (variables: {', '.join(ds.variables)}): "
                "rename the precipitation variable to precip(time, y, x)"
            )
        var = ds.variables[PRECIP]
        if var.dimensions != ("time", "y", "x"):
            raise ValueError(f"{path}: precip has dimensions {var.dimensions}, expected (time, y, x)")
        if interval_minutes is None:
            attr = getattr(var, "interval_minutes", getattr(ds, "interval_minutes", None))
            if attr is None:
                raise ValueError(
                    f"{path}: no interval_minutes attribute on precip or the file: pass --source-interval MINUTES"
                )
            interval_minutes = float(attr)
        if (
            not math.isfinite(interval_minutes)
            or abs(interval_minutes - round(interval_minutes)) > 1e-9
            or round(interval_minutes) < 1
        ):
            raise ValueError(f"{path}: interval_minutes={interval_minutes} must be a positive whole number of minutes")
        interval_minutes = int(round(interval_minutes))
        tvar = ds.variables["time"]
        tvar.set_auto_mask(False)
        calendar = str(getattr(tvar, "calendar", "standard")).lower()
        if calendar not in REAL_CALENDARS:
            raise ValueError(
                f"{path}: time calendar {calendar!r} is not the real-world one (radar data need one of "
                f"{', '.join(REAL_CALENDARS)})"
            )
        times = _time_seconds(tvar[:], getattr(tvar, "units", ""), path)
        x = np.asarray(ds.variables["x"][:], dtype=np.float64)
        y = np.asarray(ds.variables["y"][:], dtype=np.float64)
        x_units = str(getattr(ds.variables["x"], "units", ""))
        y_units = str(getattr(ds.variables["y"], "units", ""))
        proj4, wkt = "", ""
        mapping = getattr(var, "grid_mapping", None)
        if mapping and mapping in ds.variables:
            gm = ds.variables[mapping]
            wkt = str(getattr(gm, "crs_wkt", getattr(gm, "spatial_ref", "")))
            proj4 = str(getattr(gm, "proj4", ""))
    dx, dy = _regular(x, "x", path), _regular(y, "y", path)
    grid = aggregated_grid(Grid(len(x), len(y), x[0] - dx / 2, y[0] - dy / 2, dx, dy, proj4, wkt), pixels, path)
    if cadence_minutes % interval_minutes:
        raise ValueError(
            f"{path}: source steps of {interval_minutes} min cannot be summed to a cadence of "
            f"{cadence_minutes} min: choose --cadence as a multiple of {interval_minutes}"
        )
    if np.any(np.diff(times) <= 0):
        raise ValueError(f"{path}: time axis is not strictly increasing")
    k = cadence_minutes // interval_minutes
    cadence_s, step_s = cadence_minutes * 60, interval_minutes * 60
    index = {int(t): i for i, t in enumerate(times)}
    ends = np.unique(-(-times // cadence_s) * cadence_s)  # output step containing each source step
    out_times, sources, skipped = [], [], []
    for end in ends:
        wanted = [int(end - (k - 1 - j) * step_s) for j in range(k)]
        have = [index.get(w) for w in wanted]
        if None in have:
            n = k - have.count(None)
            skipped.append(
                {
                    "input": path,
                    "member": "",
                    "time": int(end),
                    "kind": "incomplete-step",
                    "reason": f"only {n} of {k} source steps of the {cadence_minutes}-min step in the file",
                }
            )
            continue
        out_times.append(int(end))
        sources.append(have)
    on_grid = {int(end - j * step_s) for end in ends for j in range(k)}
    for t in times:  # source steps no output step takes: off the file's own step grid
        if int(t) not in on_grid:
            log.warning(
                "%s: step ending %s is off the %d-min grid of the file: skipped",
                path,
                np.datetime64(int(t), "s"),
                interval_minutes,
            )
            skipped.append(
                {
                    "input": path,
                    "member": "",
                    "time": int(t),
                    "kind": "off-grid",
                    "reason": f"step end not on the {interval_minutes}-min grid of the file",
                }
            )
    plan = NetcdfPlan(
        path,
        grid,
        interval_minutes,
        np.asarray(out_times, np.int64),
        np.asarray(sources, np.int64).reshape(-1, k),
        x_units,
        y_units,
        pixels,
    )
    return plan, skipped


def read_steps(plan: NetcdfPlan, first: int, stop: int, cap_mm_per_hour: float, dequantise_mm: float = 0.0):
    """Yield (end time, mm float32 frame, FrameQC) for output steps first..stop-1 of the plan,
    reading only the source steps of one output step at a time (each dequantised when
    dequantise_mm > 0)."""
    limit = cap_amount(cap_mm_per_hour, plan.interval_minutes)
    with _open(plan.path) as ds:
        var = ds.variables[PRECIP]
        var.set_auto_maskandscale(True)  # CF unpacking (scale_factor, add_offset) and masking of the packed fill
        for end, idx in zip(plan.out_times[first:stop], plan.sources[first:stop]):
            lo, hi = int(idx.min()), int(idx.max()) + 1
            block = np.ma.filled(np.ma.asarray(var[lo:hi]).astype(np.float32), np.nan)
            qc = FrameQC()
            total = np.zeros(block.shape[1:], np.float64)
            for i in idx:
                mm, step_qc = clean_mm(block[i - lo], limit)
                total += dequantise(mm, dequantise_mm) if dequantise_mm else mm
                qc += step_qc
            frame = total.astype(np.float32)
            if plan.pixels > 1:
                k, g = plan.pixels, plan.grid
                frame = coarsen(frame[None, : g.height * k, : g.width * k], k, 1)[0]
            yield int(end), frame, qc
