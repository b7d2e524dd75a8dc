"""CF-1.11 metadata shared by every netCDF hpcsr writes (ensembles, truth crops, benchmark copies).

- Precipitation is `lwe_thickness_of_precipitation_amount` in mm (the liquid-water depth per step;
  `precipitation_amount` would need kg m-2), with `cell_methods: time: sum`.
- The grid mapping comes from the data's CRS through pyproj (`CRS.to_cf()`), parsed from whatever
  the input carried (`crs_wkt`, `spatial_ref`, a proj4 string, or CF grid-mapping attributes), so a
  polar stereographic, an oblique Mercator and a lat/lon grid all get their own correct variable.
  The input's WKT is kept word for word in `crs_wkt`; where CF's parameters cannot express the CRS
  (the Swiss oblique Mercator's rectified-grid angle: parameters alone rotate the grid by 90
  degrees) the variable's `comment` says so and that crs_wkt is authoritative.
- x/y take standard_name, axis and units from the CRS's coordinate system (`CRS.cs_to_cf()`);
  coordinate variables carry no _FillValue.
- Global attributes: Conventions, title, history (time and command), source, references, and
  institution when the user sets HPCSR_INSTITUTION.
"""

from __future__ import annotations

import datetime
import logging
import os
import warnings

import numpy as np

log = logging.getLogger(__name__)

CONVENTIONS = "CF-1.11"
PRECIP_STANDARD_NAME = "lwe_thickness_of_precipitation_amount"
PRECIP_UNITS = "mm"
REFERENCES = "arXiv:2604.21903 (scale-adaptive joint spatiotemporal super-resolution with diffusion models)"
TIME_UNITS = "seconds since 1970-01-01 00:00:00"  # of every time axis hpcsr writes (int64)
TIME_ATTRS = {
    "standard_name": "time",
    "axis": "T",
    "calendar": "standard",
    "units_metadata": "leap_seconds: none",
    "long_name": "end of accumulation interval",
}
CRS_KEYS = ("crs_wkt", "spatial_ref", "proj4", "proj4_params")
LENGTH_UNITS = {"metre": "m", "meter": "m", "m": "m", "km": "km", "kilometre": "km"}
WKT_STARTS = ("PROJCRS", "PROJCS", "GEOGCRS", "GEOGCS", "BOUNDCRS", "COMPOUNDCRS", "GEODCRS", "GEOCCS")
NO_FILL = {"_FillValue": None}  # xarray encoding for coordinate variables


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else ("" if value is None else str(value))


def crs_from(attrs: dict):
    """The pyproj CRS of grid-mapping attributes, or None when they describe none pyproj can read."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    for key in CRS_KEYS:
        text = _text(attrs.get(key))
        if text.strip():
            try:
                return CRS.from_user_input(text)
            except CRSError:
                continue
    if attrs.get("grid_mapping_name"):
        try:
            return CRS.from_cf({k: v for k, v in attrs.items() if k != "name"})
        except CRSError:
            return None
    return None


def _plain(value):
    """A netCDF-storable attribute value (tuples of numbers become float64 arrays)."""
    if isinstance(value, (list, tuple)):
        return np.asarray(value, np.float64)
    return value


def grid_mapping_attrs(attrs: dict) -> dict:
    """CF grid-mapping attributes (grid_mapping_name, crs_wkt, parameters) of the CRS in `attrs`;
    {} when there is no CRS, with a warning when something was there but could not be read."""
    crs = crs_from(attrs)
    if crs is None:
        if any(attrs.get(k) for k in CRS_KEYS + ("grid_mapping_name",)):
            log.warning(
                "the input's grid mapping could not be read as a CRS (%s): the output has no grid mapping",
                ", ".join(sorted(k for k in attrs if k != "name")),
            )
        return {}
    with warnings.catch_warnings(record=True) as lost:
        warnings.simplefilter("always")
        cf = {k: _plain(v) for k, v in crs.to_cf().items() if v is not None}
    if cf.get("grid_mapping_name") == "polar_stereographic" and "latitude_of_projection_origin" not in cf:
        # CF requires the pole (+-90); pyproj leaves it out of variant B (standard_parallel given)
        cf["latitude_of_projection_origin"] = (
            90.0 if float(np.ravel(cf.get("standard_parallel", 90.0))[0]) >= 0 else -90.0
        )
    if lost:  # e.g. the Swiss oblique Mercator's rectified-grid angle, which CF has no parameter for
        notes = "; ".join(sorted({str(w.message) for w in lost}))
        cf["comment"] = f"the CF parameters do not describe this CRS exactly ({notes}): crs_wkt is authoritative"
        log.info("grid mapping %s: %s", cf.get("grid_mapping_name"), cf["comment"])
    given = _text(attrs.get("crs_wkt") or attrs.get("spatial_ref"))
    if given.lstrip().upper().startswith(WKT_STARTS):  # the input's own WKT, word for word
        cf["crs_wkt"] = given
    cf.setdefault("crs_wkt", crs.to_wkt())
    if _text(attrs.get("proj4")).strip():
        cf["proj4"] = _text(attrs["proj4"])
    return cf


def axis_attrs(grid_mapping: dict, axis: str, given: dict | None = None) -> dict:
    """Attributes of the x (axis 'X') or y ('Y') coordinate variable: standard_name and units from
    the CRS's coordinate system, a length unit the input states (km) kept as stated."""
    given = dict(given or {})
    out = {"long_name": f"{axis.lower()} of cell centre", "axis": axis}
    crs = crs_from(grid_mapping) if grid_mapping else None
    system = next((a for a in crs.cs_to_cf() if a.get("axis") == axis), {}) if crs is not None else {}
    if system:
        units = LENGTH_UNITS.get(system["units"], system["units"])
        stated = LENGTH_UNITS.get(str(given.get("units", "")))
        out.update(standard_name=system["standard_name"], units=stated if stated and units == "m" else units)
    else:
        out.update({k: given[k] for k in ("standard_name", "units") if k in given})
        out.setdefault("standard_name", f"projection_{axis.lower()}_coordinate")
        out.setdefault("units", "m")
    return out


def precip_attrs(interval_minutes: int, long_name: str, grid_mapping: bool) -> dict:
    """Attributes of a precipitation variable accumulated over `interval_minutes` ending at time."""
    attrs = {
        "standard_name": PRECIP_STANDARD_NAME,
        "units": PRECIP_UNITS,
        "cell_methods": "time: sum",
        "long_name": long_name,
        "interval_minutes": int(interval_minutes),
    }
    if grid_mapping:
        attrs["grid_mapping"] = "crs"
    return attrs


def global_attrs(title: str, source: str, history: str, **extra) -> dict:
    """Global attributes: Conventions, title, source, history ('<UTC time>: <command>'), references,
    institution when HPCSR_INSTITUTION is set."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs = {
        "Conventions": CONVENTIONS,
        "title": title,
        "source": source,
        "history": f"{now}: {history}",
        "references": REFERENCES,
    }
    institution = os.environ.get("HPCSR_INSTITUTION", "").strip()
    if institution:
        attrs["institution"] = institution
    return {**attrs, **extra}


ENCODING = {
    "time": {"dtype": "int64", "units": TIME_UNITS, "calendar": "standard", **NO_FILL},
    "y": NO_FILL,
    "x": NO_FILL,
}  # xarray encoding of `precip_dataset`


def precip_dataset(
    values, times_s, y, x, y_attrs: dict, x_attrs: dict, grid_mapping: dict, interval: int, long_name: str, attrs: dict
):
    """CF precip(time, y, x) in mm (float32) at the steps ending `times_s` (seconds since 1970), with
    the grid mapping of `grid_mapping` (any form `crs_from` reads); write it with `encoding=ENCODING`."""
    import xarray as xr

    gm = grid_mapping_attrs(grid_mapping)
    variables = {
        "precip": (("time", "y", "x"), np.asarray(values, np.float32), precip_attrs(interval, long_name, bool(gm)))
    }
    if gm:
        variables["crs"] = ((), np.int32(0), gm)
    time_attrs = {k: v for k, v in TIME_ATTRS.items() if k != "calendar"}  # the calendar goes in the encoding
    return xr.Dataset(
        variables,
        coords={
            "time": ("time", np.asarray(times_s).astype("datetime64[s]"), time_attrs),
            "y": ("y", np.asarray(y, np.float64), axis_attrs(gm, "Y", y_attrs)),
            "x": ("x", np.asarray(x, np.float64), axis_attrs(gm, "X", x_attrs)),
        },
        attrs={**attrs, "interval_minutes": int(interval)},
    )
