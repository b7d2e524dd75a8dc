"""Readers: real Comephore GeoTIFFs (values, grid position, CRS from GeoKeys), the Comephore-format
writer at full size, tar archives read in place, bad inputs, and the netCDF reader on every real file
in ../shared/data plus hand-made files for the aggregation rules."""

import gc
import io
import math
import sys
import tarfile
from pathlib import Path

import h5py
import netCDF4
import numpy as np
import pytest
import tifffile

from hpcsr.data.store import HRStore
from preprocessing import comephore, netcdf
from preprocessing.geotiff import parse_geokeys, read_geotiff, write_geotiff
from preprocessing.ingest import BadInputError, IngestConfig, ingest
from preprocessing.parallel import Comm
from preprocessing.synth import SynthConfig, quantise, synthesize

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GTIF = SHARED / "comephore_gtif"
needs_shared = pytest.mark.skipif(not GTIF.is_dir(), reason=f"real data folder {SHARED} is absent (see its README)")
UPPER_LEFT = (-619652.074, -3526818.338)  # of the 1536 x 1536 Comephore grid (../shared/data/README.md)


def stereographic_inverse(x, y, a=6378137.0, rf=298.257223563, lat_ts=45.0, lon_0=0.0):
    """North polar stereographic (variant B) inverse on the ellipsoid, Snyder (1987) eqs. 15-9,
    21-33, 7-9, 3-5: written here independently of the code under test."""
    f = 1 / rf
    e = math.sqrt(2 * f - f * f)
    phc = math.radians(lat_ts)

    def t_of(p):
        return math.tan(math.pi / 4 - p / 2) / ((1 - e * math.sin(p)) / (1 + e * math.sin(p))) ** (e / 2)

    mc = math.cos(phc) / math.sqrt(1 - e * e * math.sin(phc) ** 2)
    t = math.hypot(x, y) * t_of(phc) / (a * mc)
    phi = math.pi / 2 - 2 * math.atan(t)
    for _ in range(30):
        phi = math.pi / 2 - 2 * math.atan(t * ((1 - e * math.sin(phi)) / (1 + e * math.sin(phi))) ** (e / 2))
    return math.degrees(math.radians(lon_0) + math.atan2(x, -y)), math.degrees(phi)


@needs_shared
def test_real_comephore_values_grid_and_crs():
    files = sorted(GTIF.glob("*_RR.gtif"))
    assert len(files) == 8
    frames = []
    for path in files:
        raw, grid, _ = read_geotiff(path.read_bytes())
        frames.append(raw)
        assert raw.dtype == np.uint16 and raw.shape == (117, 67)
        # the crop sits at column 1042, row 1021 of the 1536 x 1536 grid
        assert (grid.x0 - UPPER_LEFT[0]) / grid.dx == pytest.approx(1042, abs=1e-4)
        assert (UPPER_LEFT[1] - grid.y0) / -grid.dy == pytest.approx(1021, abs=1e-4)
        assert (grid.dx, grid.dy) == (1000.0, -1000.0)
        assert grid.crs_proj4.startswith("+proj=stere +lat_0=90 +lat_ts=45 +lon_0=0 +k=1 +x_0=0 +y_0=0 +ellps=WGS84")
        assert 'METHOD["Polar Stereographic (variant B)",ID["EPSG",9829]]' in grid.crs_wkt
        assert 'PARAMETER["Latitude of standard parallel",45,' in grid.crs_wkt
    raw = np.stack(frames)
    assert raw.max() == 358  # tenths of mm: 35.8 mm in one hour
    assert raw.max() / comephore.UNITS_PER_MM == pytest.approx(35.8)


@needs_shared
def test_real_grid_geolocates_where_comephore_is():
    raw, grid, _ = read_geotiff((GTIF / "2011110500_RR.gtif").read_bytes())
    keys = grid.geokeys
    lat_ts, a, rf = keys[3081], keys[2057], keys[2059]  # parameters as read from the file
    # the full grid's upper-left corner is the round (9.965 W, 53.67 N) of Comephore's domain
    lon, lat = stereographic_inverse(*UPPER_LEFT, a=a, rf=rf, lat_ts=lat_ts)
    assert (lon, lat) == (pytest.approx(-9.965, abs=1e-6), pytest.approx(53.67, abs=1e-6))
    # the 4-5 Nov 2011 crop lies in south-east France (Provence)
    lon, lat = stereographic_inverse(grid.x[33], grid.y[58], a=a, rf=rf, lat_ts=lat_ts)
    assert 5.0 < lon < 6.5 and 43.5 < lat < 44.5


@needs_shared
def test_real_archive_matches_the_converted_netcdf(tmp_path):
    # the loose files packed as Meteo-France does (tar, read in place) give exactly the .nc values
    archive = tmp_path / "H_COMEPHORE_201111.tar"
    with tarfile.open(archive, "w") as tar:
        for path in sorted(GTIF.glob("*.gtif")):
            tar.add(path, arcname=f"2011/{path.name}")
    ingest(tmp_path / "out", IngestConfig(comephore=(str(archive),)), Comm(), progress=False)
    store = HRStore(tmp_path / "out" / "hr.h5")
    with netCDF4.Dataset(SHARED / "comephore_sample_20111104.nc") as ds:
        precip = ds["precip"][:].filled(np.nan)
        x, y, minutes = ds["x"][:], ds["y"][:], ds["time"][:]
    np.testing.assert_array_equal(store.read(0, store.shape[0]), precip)
    np.testing.assert_array_equal(store.time_s, np.asarray(minutes, np.int64) * 60)
    np.testing.assert_allclose(store.x, x, atol=1e-6)
    np.testing.assert_allclose(store.y, y, atol=1e-6)
    assert str(store.times[0]) == "2011-11-04T21:00:00"  # file 2011110421: the hour ending 21 UTC


@needs_shared
def test_writer_full_size_has_the_real_tags_and_geokeys(tmp_path):
    real = tifffile.TiffFile(GTIF / "2011110421_RR.gtif")
    rng = np.random.default_rng(3)
    raw = quantise(np.where(rng.random((1536, 1536)) < 0.1, rng.gamma(0.5, 3.0, (1536, 1536)), 0.0).astype(np.float32))
    raw[:40, :40] = comephore.MISSING
    path = tmp_path / "2020010101_RR.gtif"
    write_geotiff(
        path,
        raw,
        comephore.comephore_geotags(0, 0),
        description="RR",
        datetime="2020:01:01 01:00:00",
        software="COMEPHORE",
        artist="METEO FRANCE",
    )
    back, grid, info = read_geotiff(path.read_bytes())
    np.testing.assert_array_equal(back, raw)
    assert (grid.width, grid.height, grid.x0, grid.y0) == (1536, 1536, *UPPER_LEFT)
    assert info["software"] == "COMEPHORE" and info["description"] == "RR"
    mine = tifffile.TiffFile(path)
    # same GeoKeys as Meteo-France's file, by tifffile's own parser and by ours
    real_keys, my_keys = real.geotiff_metadata, mine.geotiff_metadata
    for name in ("ModelTiepoint",):
        real_keys.pop(name), my_keys.pop(name)
    assert my_keys == real_keys
    real_tags = {t.code: t.value for t in real.pages[0].tags.values()}
    my_tags = {t.code: t.value for t in mine.pages[0].tags.values()}
    assert parse_geokeys(my_tags) == parse_geokeys(real_tags)
    # every descriptive and geo tag is there; SampleFormat (339) = 1 is TIFF's default for unsigned data
    assert {c for c in real_tags if c > 300} - {339} <= set(my_tags)
    assert mine.pages[0].sampleformat == real.pages[0].sampleformat == 1


def _tiny_raster(value: int, row0: int = 700, size: int = 8) -> bytes:
    buf = io.BytesIO()
    write_geotiff(
        buf,
        np.full((size, size), value, np.uint16),
        comephore.comephore_geotags(row0, 700),
        description="RR",
        datetime="2020:01:01 00:00:00",
        software="COMEPHORE",
        artist="METEO FRANCE",
    )
    return buf.getvalue()


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_archive_members_companions_and_stamps(tmp_path):
    archive = tmp_path / "H_COMEPHORE_202001.tar"
    with tarfile.open(archive, "w") as tar:
        folder = tarfile.TarInfo("COMEPHORE/2020")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        _add(tar, "COMEPHORE/2020/2020010101_RR.gtif", _tiny_raster(5))
        _add(tar, "COMEPHORE/2020/2020010101_QUALIF.gtif", _tiny_raster(99))
        _add(tar, "COMEPHORE/2020/2020010100_ERR.gtif", _tiny_raster(1))
        _add(tar, "README.txt", b"not a raster")
        _add(tar, "COMEPHORE/2020/2020010102_RR.gtif", _tiny_raster(7))
    refs, skipped = comephore.list_frames([archive])
    assert [r.member.split("/")[-1] for r in refs] == ["2020010101_RR.gtif", "2020010102_RR.gtif"]
    assert [str(np.datetime64(r.time, "s")) for r in refs] == ["2020-01-01T01:00:00", "2020-01-01T02:00:00"]
    assert skipped == []
    raw, grid = comephore.read_frame(refs[1])
    assert raw[0, 0] == 7 and grid.width == 8


def test_a_frame_read_from_bytes_is_freed_without_the_cycle_collector(tmp_path):
    """Peak memory must not grow with the period: tifffile's objects form reference cycles, freed
    only when the cyclic collector runs (rarely, once many objects are long-lived); the raster's
    bytes must not wait for it (before, tens of 4.7 MB Comephore frames did)."""
    archive = tmp_path / "H_COMEPHORE_202001.tar"
    with tarfile.open(archive, "w") as tar:
        _add(tar, "COMEPHORE/2020/2020010101_RR.gtif", _tiny_raster(5))
    source = comephore.list_frames([archive])[0][0].read_bytes()
    gc.collect()
    gc.disable()
    try:
        before = sys.getrefcount(source)
        data, grid, _ = read_geotiff(source)
        assert data[0, 0] == 5 and grid.width == 8
        del data
        assert sys.getrefcount(source) == before  # nothing else holds the bytes
    finally:
        gc.enable()


def test_duplicate_hours_are_an_error(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "2020010101_RR.gtif").write_bytes(_tiny_raster(1))
    with pytest.raises(ValueError, match="two rasters for the same hour: .*2020010101_RR.gtif"):
        comephore.list_frames([tmp_path / "a", tmp_path / "b"])


@pytest.fixture(scope="module")
def one_day(tmp_path_factory):
    raw = tmp_path_factory.mktemp("oneday")
    return synthesize(raw, SynthConfig(days=1, size=32, seed=3, start="2020-02-10"), progress=False)[0]


def _damage(src: Path, dst: Path, member: str, mode: str) -> None:
    with tarfile.open(src) as tar:
        target = tar.getmember(member)
    data = src.read_bytes()
    if mode == "garbage":
        data = data[: target.offset_data] + b"\x00" * target.size + data[target.offset_data + target.size :]
    else:  # cut the archive in the middle of the member
        data = data[: target.offset_data + target.size // 2]
    dst.write_bytes(data)


def test_corrupt_member_is_skipped_as_a_gap_or_fails(tmp_path, one_day, caplog):
    bad = tmp_path / one_day.name
    _damage(one_day, bad, "2020021007_RR.gtif", "garbage")
    out = tmp_path / "out"
    ingest(out, IngestConfig(comephore=(str(bad),)), Comm(), progress=False)
    store = HRStore(out / "hr.h5")
    assert store.shape[0] == 23
    assert [str(g) for g in store.gaps[0]] == ["2020-02-10T07:00:00", "2020-02-10T07:00:00"]
    assert [r["member"] for r in store.skipped] == ["2020021007_RR.gtif"]
    assert "skipping" in caplog.text and "2020021007_RR.gtif" in caplog.text
    with pytest.raises(BadInputError, match=r"2020021007_RR.gtif: unreadable TIFF.*--on-bad-input skip"):
        ingest(tmp_path / "out2", IngestConfig(comephore=(str(bad),), on_bad_input="fail"), Comm(), progress=False)


def test_truncated_archive_keeps_what_is_there(tmp_path, one_day):
    bad = tmp_path / one_day.name
    _damage(one_day, bad, "2020021013_RR.gtif", "truncate")
    out = tmp_path / "out"
    ingest(out, IngestConfig(comephore=(str(bad),)), Comm(), progress=False)
    store = HRStore(out / "hr.h5")
    assert str(store.times[-1]) == "2020-02-10T12:00:00" and store.shape[0] == 12
    records = {r["member"]: r["reason"] for r in store.skipped}
    assert records["2020021013_RR.gtif"].startswith("truncated: ")  # the cut member: a gap
    assert "archive damaged after 2020021013_RR.gtif" in records[""]  # and the loss of all later ones


def test_grid_change_inside_a_dataset_stops(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "2020010101_RR.gtif").write_bytes(_tiny_raster(1, row0=700))
    (b / "2020010102_RR.gtif").write_bytes(_tiny_raster(1, row0=701))
    with pytest.raises(ValueError, match=r"grid changes inside the dataset: .*upper-left"):
        ingest(tmp_path / "out", IngestConfig(comephore=(str(a), str(b))), Comm(), progress=False)


def test_implausible_comephore_values_are_masked_and_counted(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    raster = np.full((8, 8), 12, np.uint16)
    raster[0, 0], raster[1, 1], raster[2, 2] = 3500, 3000, comephore.MISSING  # 350 mm: over a 300 mm/h cap
    buf = io.BytesIO()
    write_geotiff(
        buf,
        raster,
        comephore.comephore_geotags(0, 0),
        description="RR",
        datetime="2020:01:01 01:00:00",
        software="COMEPHORE",
        artist="METEO FRANCE",
    )
    (folder / "2020010101_RR.gtif").write_bytes(buf.getvalue())
    ingest(tmp_path / "out", IngestConfig(comephore=(str(folder),)), Comm(), progress=False)
    store = HRStore(tmp_path / "out" / "hr.h5")
    frame = store.read(0, 1)[0]
    assert np.isnan(frame[0, 0]) and frame[1, 1] == np.float32(300.0) and np.isnan(frame[2, 2])
    assert frame[3, 3] == np.float32(1.2)
    with h5py.File(store.path) as f:
        assert f["qc/over_cap"][0] == 1 and f["qc/missing_source"][0] == 1


# ------------------------------------------------------------------ netCDF


@needs_shared
@pytest.mark.parametrize("name", sorted(p.name for p in SHARED.glob("*.nc")) if SHARED.is_dir() else [])
def test_every_shared_netcdf_file_reads_and_aggregates_to_hourly(name):
    path = str(SHARED / name)
    plan, skipped = netcdf.plan_file(path, 60)
    assert len(plan.out_times) >= 1 and np.all(plan.out_times % 3600 == 0)
    k = 60 // plan.interval_minutes
    first_end, frame, qc = next(netcdf.read_steps(plan, 0, 1, cap_mm_per_hour=300.0))
    with netCDF4.Dataset(path) as ds:
        sub = ds["precip"][plan.sources[0]].filled(np.nan).astype(np.float64)
        minutes = ds["time"][plan.sources[0]]
    # the hour ending E sums the k steps ending in (E - 60 min, E]
    assert np.all((first_end - np.asarray(minutes) * 60 >= 0) & (first_end - np.asarray(minutes) * 60 < 3600))
    assert sub.shape[0] == k
    limit = 300.0 * plan.interval_minutes / 60
    sub[(sub < 0) | (sub > limit)] = np.nan
    expected = sub.sum(axis=0).astype(np.float32)  # NaN wherever any step is NaN
    np.testing.assert_array_equal(frame, expected)
    assert frame.shape == (plan.grid.height, plan.grid.width)


@needs_shared
def test_opera_clutter_is_masked_and_counted(tmp_path):
    ingest(tmp_path, IngestConfig(netcdf=(str(SHARED / "opera_france_20180824.nc"),)), Comm(), progress=False)
    store = HRStore(tmp_path / "hr.h5")
    with h5py.File(store.path) as f:
        over = f["qc/over_cap"][()].sum()
    assert over == 2  # the two clutter values above 75 mm in 15 min (300 mm/h), one of ~2160 mm
    assert np.nanmax(store.read(0, store.shape[0])) < 300.0
    assert store.interval_minutes == 60 and store.encoding == "float32"
    assert any("source steps" in r["reason"] for r in store.skipped)  # partial hours at the file's ends


def _write_nc(path, values, minutes, interval=5, with_attr=True):
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", len(minutes))
        ds.createDimension("y", values.shape[1])
        ds.createDimension("x", values.shape[2])
        t = ds.createVariable("time", "i8", ("time",))
        t.units = "minutes since 1970-01-01"
        t[:] = minutes
        ds.createVariable("y", "f8", ("y",))[:] = 1000.0 * (values.shape[1] - np.arange(values.shape[1]))
        ds.createVariable("x", "f8", ("x",))[:] = 1000.0 * np.arange(values.shape[2])
        p = ds.createVariable("precip", "f4", ("time", "y", "x"), fill_value=np.float32(np.nan))
        if with_attr:
            p.interval_minutes = float(interval)
        p[:] = values


def test_netcdf_aggregation_rules_by_hand(tmp_path):
    base = 26_000_000 // 60 * 60  # a whole hour, in minutes since 1970
    minutes = base + 5 * np.arange(1, 28)  # 27 five-minute steps: two whole hours, then 3 steps
    values = np.full((27, 2, 3), 0.5, np.float32)
    values[13, 0, 0] = np.nan  # second hour: one step missing at (0, 0)
    values[2, 1, 2] = -1.0  # negative: masked, so its hour is missing there
    values[5, 0, 1] = 0.25
    path = tmp_path / "a.nc"
    _write_nc(path, values, minutes)
    plan, skipped = netcdf.plan_file(str(path), 60)
    assert list(plan.out_times) == [(base + 60) * 60, (base + 120) * 60]
    assert skipped[0]["reason"] == "only 3 of 12 source steps of the 60-min step in the file"
    frames = list(netcdf.read_steps(plan, 0, 2, 300.0))
    h1, h2 = frames[0][1], frames[1][1]
    assert h1[0, 0] == np.float32(6.0) and h1[0, 1] == np.float32(5.75) and np.isnan(h1[1, 2])
    assert np.isnan(h2[0, 0]) and h2[1, 2] == np.float32(6.0)
    assert (frames[0][2].negative, frames[1][2].missing_source) == (1, 1)
    with pytest.raises(ValueError, match="cannot be summed to a cadence of 7 min"):
        netcdf.plan_file(str(path), 7)
    _write_nc(tmp_path / "b.nc", values, minutes, with_attr=False)
    with pytest.raises(ValueError, match="pass --source-interval MINUTES"):
        netcdf.plan_file(str(tmp_path / "b.nc"), 60)
    plan, _ = netcdf.plan_file(str(tmp_path / "b.nc"), 60, interval_minutes=5)
    assert len(plan.out_times) == 2


def test_netcdf_pixel_aggregation_by_hand(tmp_path, caplog):
    minutes = 26_000_000 // 60 * 60 + 60 * np.arange(1, 3)  # two hourly steps
    values = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7) / 10
    values[1, 2, 3] = np.nan  # one missing source pixel: its whole block is missing
    path = tmp_path / "p.nc"
    _write_nc(path, values, minutes, interval=60)
    fine, _ = netcdf.plan_file(str(path), 60)
    plan, _ = netcdf.plan_file(str(path), 60, pixels=2)
    assert "the last 1 row(s) and 1 column(s) are dropped" in caplog.text
    g, f = plan.grid, fine.grid
    assert (g.height, g.width, g.dx, g.dy, g.x0, g.y0) == (2, 3, 2 * f.dx, 2 * f.dy, f.x0, f.y0)
    np.testing.assert_allclose(g.x, f.x[:6].reshape(3, 2).mean(1))  # block centres
    np.testing.assert_allclose(g.y, f.y[:4].reshape(2, 2).mean(1))
    frames = [frame for _, frame, _ in netcdf.read_steps(plan, 0, 2, 300.0)]
    expected = values[:, :4, :6].reshape(2, 2, 2, 3, 2).mean(axis=(2, 4))  # mm per step: the block mean
    np.testing.assert_allclose(frames[0], expected[0], rtol=1e-6)
    assert np.isnan(frames[1][1, 1]) and np.isfinite(np.delete(frames[1].ravel(), 4)).all()
    with pytest.raises(ValueError, match="larger than its grid of 5 x 7"):
        netcdf.plan_file(str(path), 60, pixels=6)
    with pytest.raises(ValueError, match="aggregation applies to netCDF inputs"):
        IngestConfig(comephore=(str(tmp_path),), aggregate_pixels=2)


@needs_shared
def test_bom_aggregated_to_1km_keeps_its_rain(tmp_path):
    """The 500 m BoM radar stored at 1 km: the grid, the CRS and, per frame, the rain amount of the
    512 x 512 source (every 2 x 2 block whole) are kept; the parts' key changes with the factor."""
    src = str(SHARED / "bom_c10_20201031.nc")
    cfg = IngestConfig(netcdf=(src,), cadence_minutes=60, aggregate_pixels=2)
    ingest(tmp_path / "o", cfg, Comm(), progress=False)
    store = HRStore(tmp_path / "o" / "hr.h5")
    fine_plan, _ = netcdf.plan_file(src, 60)
    fine = np.stack([frame for _, frame, _ in netcdf.read_steps(fine_plan, 0, 3, 300.0)])
    coarse = store.read(0, 3)
    assert coarse.shape == (3, 256, 256) and store.transform[1] == 2 * fine_plan.grid.dx
    assert store.crs_wkt == fine_plan.grid.crs_wkt
    both = ~np.isnan(coarse).repeat(2, 1).repeat(2, 2) & ~np.isnan(fine)
    area = np.where(both, fine, 0.0).sum(axis=(1, 2)) / 4  # mm x (1 km)^2 per frame
    np.testing.assert_allclose(np.nansum(coarse, axis=(1, 2)), area, rtol=1e-5)
    from preprocessing.ingest import plan_units

    assert plan_units(cfg)[0][0].key != plan_units(IngestConfig(netcdf=(src,), cadence_minutes=60))[0][0].key


def test_netcdf_dequantised_on_ingest(tmp_path):
    """--dequantise Q: each source step is smoothed inside its rounding bins before the steps are
    summed (two 30-min steps into one hour here), the store records Q, the units' key changes with it;
    it refuses Comephore, a uint16 store and a negative step."""
    from preprocessing.dequantise import dequantise
    from preprocessing.ingest import plan_units

    minutes = 26_000_000 // 60 * 60 + 30 * np.arange(1, 5)  # four 30-min steps: two hours
    yy, xx = np.mgrid[0:12, 0:10]
    light = 0.05 + 0.006 * xx + 0.003 * yy
    values = np.stack([np.round(light * (1 + 0.2 * k) / 0.05) * 0.05 for k in range(4)]).astype(np.float32)
    values[:, 0, :3] = 0.0  # dry
    values[1, 5, 5] = np.nan
    path = str(tmp_path / "r.nc")
    _write_nc(path, values, minutes, interval=30)
    cfg = IngestConfig(netcdf=(path,), dequantise_mm=0.05)
    ingest(tmp_path / "o", cfg, Comm(), progress=False)
    store = HRStore(tmp_path / "o" / "hr.h5")
    got = store.read(0, 2)
    want = np.stack([dequantise(values[2 * h], 0.05) + dequantise(values[2 * h + 1], 0.05) for h in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert np.isnan(got[0, 5, 5]) and np.all(got[:, 0, :3] == 0)
    assert not np.allclose(got[1], values[2] + values[3])  # it did smooth
    with h5py.File(store.path) as f:
        assert float(f.attrs["dequantise_mm"]) == 0.05
    assert plan_units(cfg)[0][0].key != plan_units(IngestConfig(netcdf=(path,)))[0][0].key
    for bad, match in (
        (dict(netcdf=(path,), dequantise_mm=0.05, encoding="uint16/100"), "needs netCDF input stored as float32"),
        (dict(comephore=(str(tmp_path),), dequantise_mm=0.1), "needs netCDF input stored as float32"),
        (dict(netcdf=(path,), dequantise_mm=-0.05), "must be >= 0 mm"),
    ):
        with pytest.raises(ValueError, match=match):
            IngestConfig(**bad)


def test_netcdf_uint16_encoding_is_lossless_or_refuses(tmp_path):
    minutes = 26_000_000 // 60 * 60 + 60 * np.arange(1, 4)
    values = np.array([0.0, 0.01, 1.23, 4.56], np.float32).reshape(1, 2, 2).repeat(3, axis=0)
    _write_nc(tmp_path / "q.nc", values, minutes, interval=60)
    ingest(
        tmp_path / "o1", IngestConfig(netcdf=(str(tmp_path / "q.nc"),), encoding="uint16/100"), Comm(), progress=False
    )
    store = HRStore(tmp_path / "o1" / "hr.h5")
    assert store.encoding == "uint16" and store.units_per_mm == 100
    np.testing.assert_array_equal(store.read(0, 3), values)
    with pytest.raises(ValueError, match=r"not a multiple of 1/10 mm.*--encoding float32"):
        ingest(
            tmp_path / "o2",
            IngestConfig(netcdf=(str(tmp_path / "q.nc"),), encoding="uint16/10"),
            Comm(),
            progress=False,
        )
