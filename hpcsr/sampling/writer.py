"""The ensemble netCDF (CF-1.11, metadata from hpcsr.cf), written chunk by chunk under a temporary name and moved into place
only once complete, so an interrupted run never leaves a file that looks finished.

Layout (xarray opens it directly):
    dims       time (T = target blocks x t HR steps), member (M), y (Y), x (X)
    precip     (time, member, y, x) float32  mm per HR step (lwe_thickness_of_precipitation_amount),
                                             NaN = masked (missing input); time first, as CDO
                                             needs (members are its levels); readers select by name
    precip_mean (time, y, x) float32         the mean network alone, same post-processing
    masked_pixels (time) int32               NaN HR pixels per step (identical for every member)
    member     (member) int32                0..M-1 (standard_name realization)
    time       (time) int64                  seconds since 1970-01-01, END of each HR step
    y, x       float64                       HR cell centres (standard_name and units from the CRS)
    crs        int32 scalar                  CF grid mapping of the input's CRS (pyproj `to_cf`)
Global attributes record the factor pair, the model (export, config hash, lineage), the sampler
settings, the seed rule, the mass transform, the tiling, the input, the counts of masked values and
the code version (dicts as JSON strings).
"""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np

from hpcsr import cf
from hpcsr.atomic import AtomicPath

CHUNK_SIDE = 256  # spatial chunk side of the netCDF variables


def attr_value(value):
    """A netCDF-storable attribute: numbers and strings as they are, everything else as JSON."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str, np.integer, np.floating)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class EnsembleWriter:
    """Rank 0's writer: `write_member(...)` per member as it is sampled, `write_mean(...)` per chunk, then `close(attrs)`."""

    def __init__(
        self,
        path,
        members: int,
        times_s: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        x_attrs: dict,
        y_attrs: dict,
        crs: dict,
        hr_step_minutes: int,
        attrs: dict,
    ):
        self.path = Path(path)
        self._target = AtomicPath(self.path)
        ds = netCDF4.Dataset(self._target.tmp, "w", format="NETCDF4")
        self.ds = ds
        T, Y, X = len(times_s), len(y), len(x)
        ds.createDimension("member", members)
        ds.createDimension("time", T)
        ds.createDimension("y", Y)
        ds.createDimension("x", X)
        v = ds.createVariable("member", "i4", ("member",))
        v[:] = np.arange(members, dtype=np.int32)
        v.setncatts({"long_name": "ensemble member", "standard_name": "realization", "units": "1"})
        v = ds.createVariable("time", "i8", ("time",))
        v[:] = np.asarray(times_s, np.int64)
        v.setncatts({"units": cf.TIME_UNITS, **cf.TIME_ATTRS})
        grid_mapping = cf.grid_mapping_attrs(crs)
        for name, values, given in (("y", y, y_attrs), ("x", x, x_attrs)):
            v = ds.createVariable(name, "f8", (name,))
            v[:] = np.asarray(values, np.float64)
            v.setncatts({k: attr_value(a) for k, a in cf.axis_attrs(grid_mapping, name.upper(), given).items()})
        if grid_mapping:
            v = ds.createVariable("crs", "i4", ())
            v.setncatts(grid_mapping)
        chunks = (1, 1, min(Y, CHUNK_SIDE), min(X, CHUNK_SIDE))
        self.precip = ds.createVariable(
            "precip",
            "f4",
            ("time", "member", "y", "x"),
            zlib=True,
            complevel=1,
            shuffle=True,
            chunksizes=chunks,
            fill_value=np.float32(np.nan),
        )
        self.precip.setncatts(
            cf.precip_attrs(
                hr_step_minutes,
                f"precipitation over the {hr_step_minutes} minutes ending "
                "at time, ensemble member (mean + sampled residual, relu, mass transform)",
                bool(grid_mapping),
            )
        )
        self.mean = ds.createVariable(
            "precip_mean",
            "f4",
            ("time", "y", "x"),
            zlib=True,
            complevel=1,
            shuffle=True,
            chunksizes=chunks[1:],
            fill_value=np.float32(np.nan),
        )
        self.mean.setncatts(
            cf.precip_attrs(
                hr_step_minutes,
                "mean network prediction (relu, mass transform), no sampled residual",
                bool(grid_mapping),
            )
        )
        self.masked = ds.createVariable("masked_pixels", "i4", ("time",))
        self.masked.long_name = "HR pixels set to NaN in this step (missing LR input), the same for every member"
        ds.setncatts({k: attr_value(a) for k, a in attrs.items()})

    def write_member(self, first_step: int, member: int, field: np.ndarray) -> None:
        """One member's field (n, Y, X) for HR steps first_step .. first_step+n-1."""
        self.precip[first_step : first_step + field.shape[0], member] = field

    def write_mean(self, first_step: int, mean: np.ndarray, masked: np.ndarray) -> None:
        """mean (n, Y, X) and masked (n,) for HR steps first_step .. first_step+n-1."""
        n = mean.shape[0]
        self.mean[first_step : first_step + n] = mean
        self.masked[first_step : first_step + n] = masked

    def close(self, attrs: dict) -> Path:
        """Add the final attributes, flush, and move the file into place."""
        self.ds.setncatts({k: attr_value(a) for k, a in attrs.items()})
        self.ds.sync()
        self.ds.close()
        return self._target.commit()

    def abort(self) -> None:
        """Drop the unfinished file."""
        try:
            self.ds.close()
        except RuntimeError:
            pass
        self._target.discard()
