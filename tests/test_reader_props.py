"""Property-based fault injection for the readers (issue 15): random bytes, truncations, flipped
bytes and random metadata never crash a reader with anything but its own clear error type, and
what a reader accepts is a valid result. Inputs are the real shared files, damaged by hypothesis."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preprocessing import comephore, netcdf
from preprocessing.geotiff import GeoTiffError, read_geotiff

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GTIF = DATA / "comephore_gtif"
SAMPLE = DATA / "comephore_sample_20111104.nc"
pytestmark = pytest.mark.skipif(not (GTIF.is_dir() and SAMPLE.is_file()), reason=f"real data absent from {DATA}")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def raster_bytes() -> bytes:
    return sorted(GTIF.iterdir())[0].read_bytes()


def check_raster(data: bytes) -> None:
    """A damaged raster reads as a clear GeoTiffError or as a plausible raster, nothing else."""
    try:
        pixels, grid, _ = read_geotiff(data)
    except GeoTiffError as err:
        assert str(err)
        return
    assert pixels.ndim == 2 and pixels.shape == (grid.height, grid.width)
    assert np.isfinite([grid.x0, grid.y0, grid.dx, grid.dy]).all()


@SETTINGS
@given(cut=st.integers(0, 8000))
def test_truncated_geotiffs(cut):
    check_raster(raster_bytes()[:cut])


@SETTINGS
@given(flips=st.lists(st.tuples(st.integers(0, 7999), st.integers(1, 255)), min_size=1, max_size=20))
def test_geotiffs_with_flipped_bytes(flips):
    data = bytearray(raster_bytes())
    for at, mask in flips:
        data[at % len(data)] ^= mask
    check_raster(bytes(data))


@SETTINGS
@given(noise=st.binary(min_size=0, max_size=4096), tiff_header=st.booleans())
def test_random_bytes_as_geotiff(noise, tiff_header):
    check_raster((b"II*\x00" if tiff_header else b"") + noise)


@SETTINGS
@given(cut=st.integers(0, 40000))
def test_truncated_archives_keep_whole_members_or_refuse(tmp_path_factory, cut):
    """A cut archive lists the members before the cut (and records the damage) or refuses clearly."""
    folder = tmp_path_factory.mktemp("tar")
    archive = folder / "H_COMEPHORE_201111.tar"
    with tarfile.open(archive, "w") as tar:
        for f in sorted(GTIF.iterdir()):
            tar.add(f, arcname=f.name)
    data = archive.read_bytes()
    archive.write_bytes(data[: cut % (len(data) + 1)])
    try:
        refs, skipped = comephore.list_frames([archive])
    except ValueError as err:
        assert "tar" in str(err) or "no YYYYMMDDHH_RR.gtif raster" in str(err)
        return
    assert refs and all(r.container == str(archive) for r in refs)
    for ref in refs:  # a listed member is either whole or its read fails with the reader's error
        try:
            comephore.read_frame(ref)
        except (GeoTiffError, OSError):
            pass
    assert all(r["kind"] == "damaged-archive" for r in skipped)


ATTRIBUTE_VALUES = st.one_of(
    st.none(), st.integers(-100, 100), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12)
)


@SETTINGS
@given(
    interval=ATTRIBUTE_VALUES,
    units=st.one_of(
        st.none(),
        st.text(max_size=30),
        st.sampled_from(
            ["hours since 1970-1-1", "seconds since 2011-11-04", "days since 1900-01-01 00:00:00", "minutes"]
        ),
    ),
    calendar=st.sampled_from([None, "standard", "noleap", "360_day", "julian", "gregorian"]),
)
def test_netcdf_metadata_at_random(tmp_path_factory, interval, units, calendar):
    """Random interval_minutes, time units and calendars: planned or refused with a ValueError."""
    path = tmp_path_factory.mktemp("nc") / "random.nc"
    with xr.open_dataset(SAMPLE, decode_times=False) as ds:
        ds = ds.load()
    for holder in (ds.attrs, ds["precip"].attrs):
        holder.pop("interval_minutes", None)
    if interval is not None:
        ds.attrs["interval_minutes"] = interval
    ds["time"].attrs.pop("units", None)
    ds["time"].attrs.pop("calendar", None)
    if units is not None:
        ds["time"].attrs["units"] = units
    if calendar is not None:
        ds["time"].attrs["calendar"] = calendar
    ds.to_netcdf(path)
    try:
        plan, skipped = netcdf.plan_file(str(path), 60)
    except ValueError as err:
        assert str(err)
        return
    assert plan.interval_minutes > 0 and len(plan.out_times) + len(skipped) >= 1
    assert np.all(np.diff(plan.out_times) > 0)


@pytest.mark.slow  # a CLI process per example
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 130000))  # a subprocess each: few examples
def test_truncated_netcdf_through_the_cli(tmp_path_factory, cut):
    """A cut netCDF file through `hpcsr-preprocess ingest`: exit 0 (enough was there) or a one-line
    error with exit 2 (bad input), never a traceback."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("cut")
    data = SAMPLE.read_bytes()
    (folder / "cut.nc").write_bytes(data[: cut % (len(data) + 1)])
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "preprocessing.cli",
            "ingest",
            "--out",
            str(folder / "out"),
            "--netcdf",
            str(folder / "cut.nc"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode in (0, 2), out.stderr  # ok, or bad input (hpcsr/exits.py)
    assert "Traceback" not in out.stderr, out.stderr
    if out.returncode:
        assert "hpcsr-preprocess: error:" in out.stderr
