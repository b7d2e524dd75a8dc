"""A small radar netCDF in the layout of shared/data's Comephore sample (CF-1.8, hourly accumulations
ending at `time`, 1 km polar-stereographic grid with a `crs` grid mapping, y descending), filled with
a widespread storm: a smooth lognormal field (power-law spectrum) drifting one pixel an hour, about
95 % of pixels wet, a few tens of mm at most, quantised to 0.1 mm. Deterministic per seed; for tests
that check mechanics (geometry, masses, masks, seeds, file formats) and need no real skill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import xarray as xr

# Comephore's grid: polar stereographic, standard parallel 45N, WGS84 (as in the real sample).
CRS = pyproj.CRS.from_proj4("+proj=stere +lat_0=90 +lat_ts=45 +lon_0=0 +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m")


def storm(shape: tuple[int, int, int], seed: int = 0, drift: int = 1) -> np.ndarray:
    """(time, y, x) hourly rain in mm: exp of a smooth Gaussian field (spectrum ~ k^-3.5) that drifts
    `drift` pixels east per hour, scaled to a mean near 4 mm and quantised to tenths."""
    n_t, n_y, n_x = shape
    if drift != 1:
        wide = storm((1, n_y, n_x + (n_t - 1) * drift), seed)[0]
        return np.stack([wide[:, (n_t - 1 - i) * drift : (n_t - 1 - i) * drift + n_x] for i in range(n_t)])
    rng = np.random.default_rng(seed)
    ky = np.fft.fftfreq(n_y)[:, None]
    kx = np.fft.fftfreq(n_x + n_t)[None, :]
    k = np.hypot(ky, kx)
    k[0, 0] = 1.0
    spectrum = k**-1.75 * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    field = np.fft.ifft2(spectrum).real
    field = (field - field.mean()) / field.std()
    frames = np.stack([field[:, n_t - i : n_t - i + n_x] for i in range(n_t)])
    rain = np.exp(1.0 + 0.8 * frames) - 0.4
    return np.round(np.clip(rain, 0.0, None), 1).astype(np.float32)


def write_radar_nc(path: Path, shape: tuple[int, int, int] = (8, 42, 37), seed: int = 0, drift: int = 1) -> Path:
    """Write the storm of `shape` (moving `drift` px per hour) as a Comephore-format netCDF at `path`; returns `path`."""
    n_t, n_y, n_x = shape
    time = pd.date_range("2011-11-04 21:00", periods=n_t, freq="h")
    x = 422_750.0 + 1000.0 * np.arange(n_x)
    y = -4_547_750.0 - 1000.0 * np.arange(n_y)
    precip = xr.DataArray(
        storm(shape, seed, drift),
        dims=("time", "y", "x"),
        attrs={
            "long_name": "precipitation accumulated over the 60 minutes ending at time",
            "standard_name": "precipitation_amount",
            "units": "mm",
            "interval_minutes": 60.0,
            "grid_mapping": "crs",
        },
    )
    ds = xr.Dataset(
        {"precip": precip, "crs": xr.DataArray(np.int32(0), attrs={**CRS.to_cf(), "crs_wkt": CRS.to_wkt()})},
        coords={
            "time": ("time", time, {"long_name": "end of accumulation interval", "axis": "T"}),
            "y": ("y", y, {"units": "m", "axis": "Y", "standard_name": "projection_y_coordinate"}),
            "x": ("x", x, {"units": "m", "axis": "X", "standard_name": "projection_x_coordinate"}),
        },
        attrs={"Conventions": "CF-1.8", "interval_minutes": 60.0, "title": "synthetic storm (tests)"},
    )
    ds.to_netcdf(path, encoding={"time": {"units": "minutes since 1970-01-01", "dtype": "int64"}})
    return path
